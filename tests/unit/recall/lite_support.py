"""Milvus Lite set-up shared by the tests that compare our Lite replacements with Lite's own code
(`lite_search`, `lite_compaction`, `lite_query`): a client on a file, and a small collection."""

from __future__ import annotations

from pathlib import Path

from pymilvus import DataType, MilvusClient

from feedbackloop.recall.index import LITE_CHANNEL_OPTIONS

DIM = 8
PARTITIONS = ("p1", "p2")


def lite_client(path: Path) -> MilvusClient:
    return MilvusClient(uri=str(path), grpc_options=LITE_CHANNEL_OPTIONS)


def create_tagged_collection(client: MilvusClient, index_type: str) -> None:
    """Collection "c": a string id, a DIM-dimensional vector under `index_type`, an int tag, and
    the partitions PARTITIONS; loaded."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=32)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("tag", DataType.INT64)
    params = client.prepare_index_params()
    build = {"M": 8, "efConstruction": 64} if index_type == "HNSW" else {}
    params.add_index(field_name="vector", index_type=index_type, metric_type="COSINE", params=build)
    client.create_collection("c", schema=schema, consistency_level="Strong")
    client.create_index("c", params, sync=False)  # waiting would call an RPC Lite lacks
    for partition in PARTITIONS:
        client.create_partition("c", partition)
    client.load_collection("c")
