"""The direct bulk reader (`recall/lite_query.py`) answers exactly as Milvus Lite's query iterator.

Each read in these tests is made twice on the same data, through the reader and through pymilvus'
`query_iterator` (Lite's own query, over gRPC), and the two must give the same ids in the same
order and the same vectors. The histories mix inserts, upserts (also across partitions), deletes
and flushes, read with the filters recall writes (project, time range, flags, `in` lists, the
shadow-column LIKE, `array_contains_any`, excluded ids); the answers are also checked against a
plain dictionary model of the history, so that two identical wrong answers would fail too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import milvus_lite
import numpy as np
import pytest
from lite_support import DIM, PARTITIONS, lite_client
from pymilvus import DataType, MilvusClient

from feedbackloop.config import Settings
from feedbackloop.recall import lite_query, lite_search
from feedbackloop.recall.filters import RecallFilter
from feedbackloop.recall.index import FeedbackIndex, IndexRow

PROJECTS = ("a", "b")
TAGS = ("x", "y", "z")
Row = dict[str, Any]

# Each filter with the row predicate it means, for the model check.
FILTERS: dict[str, Callable[[str, Row], bool]] = {
    "": lambda pk, r: True,
    'project == "a"': lambda pk, r: r["project"] == "a",
    'project == "a" and (at >= 3) and (at < 8)': lambda pk, r: r["project"] == "a" and 3 <= r["at"] < 8,
    'project == "b" and (flag == true)': lambda pk, r: r["project"] == "b" and r["flag"],
    'project in ["a", "b"] and (tags_text like "%|y|%")': lambda pk, r: "y" in r["tags"],
    'array_contains_any(tags, ["x", "z"])': lambda pk, r: bool({"x", "z"} & set(r["tags"])),
    'project == "a" and not (id in ["k1", "k2", "k3"])': lambda pk, r: (
        r["project"] == "a" and pk not in {"k1", "k2", "k3"}
    ),
}


def _create(client: MilvusClient) -> None:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=32)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("project", DataType.VARCHAR, max_length=16)
    schema.add_field("at", DataType.INT64)
    schema.add_field("flag", DataType.BOOL)
    schema.add_field("tags_text", DataType.VARCHAR, max_length=64)
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=4, max_length=8)
    params = client.prepare_index_params()
    params.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE", params={})
    client.create_collection("c", schema=schema, consistency_level="Strong")
    client.create_index("c", params, sync=False)  # waiting would call an RPC Lite lacks
    for partition in PARTITIONS:
        client.create_partition("c", partition)
    client.load_collection("c")


def _stock(client: MilvusClient, expr: str, batch_size: int = 7) -> tuple[list[str], list[np.ndarray]]:
    iterator = client.query_iterator(
        "c", batch_size=batch_size, filter=expr, output_fields=["id", "vector"], consistency_level="Strong"
    )
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    try:
        while page := iterator.next():
            for row in page:
                ids.append(str(row["id"]))
                vectors.append(np.asarray(row["vector"], dtype=np.float32))
    finally:
        iterator.close()
    return ids, vectors


class History:
    """Random writes to the collection, mirrored in a dictionary of the rows that should be live."""

    def __init__(self, client: MilvusClient, seed: int) -> None:
        self.client = client
        self.rng = np.random.default_rng(seed)
        self.live: dict[str, Row] = {}

    def write(self) -> None:
        partition = str(self.rng.choice(PARTITIONS))
        rows: list[Row] = []
        for pk in sorted({f"k{int(i)}" for i in self.rng.integers(0, 40, size=5)}):
            tags = sorted({str(t) for t in self.rng.choice(TAGS, size=int(self.rng.integers(0, 3)))})
            rows.append(
                {
                    "id": pk,
                    "vector": [float(x) for x in self.rng.normal(size=DIM).astype(np.float32)],
                    "project": str(self.rng.choice(PROJECTS)),
                    "at": int(self.rng.integers(0, 12)),
                    "flag": bool(self.rng.random() < 0.5),
                    "tags_text": "|" + "|".join(tags) + "|" if tags else "",
                    "tags": tags,
                }
            )
        self.client.upsert("c", rows, partition_name=partition)
        for row in rows:
            self.live[row["id"]] = row

    def delete(self) -> None:
        ids = sorted({f"k{int(i)}" for i in self.rng.integers(0, 40, size=3)})
        self.client.delete("c", ids=ids)
        for pk in ids:
            self.live.pop(pk, None)

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.6:
            self.write()
        elif roll < 0.85:
            self.delete()
        else:
            self.client.flush("c")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[MilvusClient, Path]]:
    path = tmp_path / "query.db"
    client = lite_client(path)
    _create(client)
    yield client, path
    client.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_histories_read_as_the_stock_query_iterator(
    client: tuple[MilvusClient, Path], seed: int
) -> None:
    milvus, path = client
    history = History(milvus, seed)
    rows_seen = 0
    for step in range(60):
        history.step()
        expr = list(FILTERS)[step % len(FILTERS)]
        collection = lite_query.engine_collection(str(path), "c")
        assert collection is not None
        direct = lite_query.read(collection, expr or None, "vector")
        assert direct is not None
        stock_ids, stock_vectors = _stock(milvus, expr)
        assert [str(i) for i in direct.ids] == stock_ids
        assert direct.vectors.dtype == np.float32
        assert direct.vectors.shape == (len(stock_ids), DIM)
        for got, expected in zip(direct.vectors, stock_vectors, strict=True):
            assert np.array_equal(got, expected)
        # The model: every live row that passes, once, in ascending id order, as last written.
        passes = FILTERS[expr]
        model = sorted(pk for pk, row in history.live.items() if passes(pk, row))
        assert stock_ids == model
        for pk, got in zip(stock_ids, direct.vectors, strict=True):
            assert np.array_equal(got, np.asarray(history.live[pk]["vector"], dtype=np.float32))
        rows_seen += len(model)
    assert rows_seen > 200  # the histories are not trivially empty


def test_an_empty_answer_keeps_the_vector_width(client: tuple[MilvusClient, Path]) -> None:
    milvus, path = client
    History(milvus, 3).write()
    collection = lite_query.engine_collection(str(path), "c")
    assert collection is not None
    rows = lite_query.read(collection, 'project == "nobody"', "vector")
    assert rows is not None
    assert rows.ids == [] and rows.vectors.shape == (0, DIM)


def test_no_engine_for_a_path_this_process_has_not_opened(tmp_path: Path) -> None:
    assert lite_query.engine_collection(str(tmp_path / "elsewhere.db"), "c") is None


def test_a_dropped_collection_is_not_opened_again(client: tuple[MilvusClient, Path]) -> None:
    milvus, path = client
    assert lite_query.engine_collection(str(path), "c") is not None
    milvus.drop_collection("c")
    # Opening it here would make a second engine over the files; the stock path reports it gone.
    assert lite_query.engine_collection(str(path), "c") is None


def test_a_collection_the_server_has_not_opened_is_left_closed(client: tuple[MilvusClient, Path]) -> None:
    from milvus_lite.server_manager import server_manager_instance

    _, path = client
    db = server_manager_instance._servers[str(path.resolve())][1]
    opened = db._collections.pop(("default", "c"))  # as after a restart, before any request
    try:
        assert lite_query.engine_collection(str(path), "c") is None
        assert ("default", "c") not in db._collections  # no second engine over the same files
    finally:
        db._collections[("default", "c")] = opened


def _rows(rng: np.random.Generator, count: int) -> list[IndexRow]:
    rows = []
    for _ in range(count):
        vector = rng.normal(size=DIM).astype(np.float32)
        rows.append(
            IndexRow(
                id=f"fb_{int(rng.integers(0, 120)):04d}",
                project_id=str(rng.choice(["p1", "p2"])),
                vector=vector / np.linalg.norm(vector),
                signals=tuple(rng.choice(["thumbs_down", "comment", "edit"], size=int(rng.integers(0, 3)))),
                categories=tuple(rng.choice(["tax", "tone", "a b"], size=int(rng.integers(0, 2)))),
                model_version=str(rng.choice(["m1", "m2"])),
                source=str(rng.choice(["end_user", "evaluator"])),
                occurred_at=int(rng.integers(0, 1000)),
                negative=bool(rng.random() < 0.6),
            )
        )
    return rows


def _filter(rng: np.random.Generator) -> RecallFilter:
    start = int(rng.integers(0, 600))
    choices = [
        RecallFilter(negative_only=True).within(start, start + 400),
        RecallFilter(signals=("comment",), negative_only=True),
        RecallFilter(categories=("a b",), model_versions=("m2",)),
        RecallFilter(sources=("evaluator",)).within(0, start),
        RecallFilter(),
    ]
    return choices[int(rng.integers(len(choices)))]


@pytest.fixture
def paired(tmp_path: Path) -> Iterator[tuple[FeedbackIndex, FeedbackIndex]]:
    """One collection read two ways: the direct reader and the stock iterator (small flushes)."""
    uri = str(tmp_path / "paired.db")
    direct = FeedbackIndex(uri, "pair", lite_flush_rows=23)
    direct.ensure_collection(DIM)
    stock = FeedbackIndex(uri, "pair", lite_direct_reads=False)
    try:
        yield direct, stock
    finally:
        stock.close()
        direct.close()


def test_the_index_reads_windows_as_the_stock_iterator(
    paired: tuple[FeedbackIndex, FeedbackIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, stock = paired
    calls: list[str] = []
    real_read = lite_query.read

    def counted(collection: Any, expr: str | None, vector_field: str) -> lite_query.Rows | None:
        calls.append(expr or "")
        return real_read(collection, expr, vector_field)

    monkeypatch.setattr(lite_query, "read", counted)
    rng = np.random.default_rng(5)
    seen = 0
    for step in range(25):
        direct.upsert(_rows(rng, 9))
        if step % 4 == 3:
            gone = sorted({f"fb_{int(i):04d}" for i in rng.integers(0, 120, size=6)})
            direct.delete("p1", gone)
        project = "p1" if step % 2 else "p2"
        recall_filter = _filter(rng)
        got = list(direct.iter_vectors(project, recall_filter))
        expected = list(stock.iter_vectors(project, recall_filter, page_size=16))
        assert [i for i, _ in got] == [i for i, _ in expected]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected, strict=True))
        seen += len(got)
    assert len(calls) == 25, "every read of the direct index went through the reader"
    assert all(c.startswith('project_id == "') for c in calls)
    assert seen > 100


def test_an_unchecked_lite_version_reads_through_the_iterator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(milvus_lite, "__version__", "9.9.9")

    def refused(*_: Any) -> None:
        raise AssertionError("the direct reader ran on an unchecked Lite version")

    monkeypatch.setattr(lite_query, "read", refused)
    index = FeedbackIndex(str(tmp_path / "unchecked.db"), "u")
    try:
        index.ensure_collection(DIM)
        rows = _rows(np.random.default_rng(1), 30)
        index.upsert(rows)
        latest = {row.id: row for row in rows}
        got = [fid for fid, _ in index.iter_vectors("p1")]
        assert got == sorted(fid for fid, row in latest.items() if row.project_id == "p1")
        assert "milvus-lite 9.9.9: bulk reads go through its query iterator" in caplog.text
    finally:
        index.close()


def test_turning_the_live_row_cache_off_turns_the_direct_reader_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*_: Any) -> None:
        raise AssertionError("the direct reader ran with the live-row cache turned off")

    monkeypatch.setattr(lite_query, "read", refused)
    settings = Settings(data_dir=tmp_path, policies_dir=None, milvus_lite_live_row_cache=False)
    index = FeedbackIndex.from_settings(settings)
    assert index.is_lite
    try:
        index.ensure_collection(DIM)
        rng = np.random.default_rng(2)
        latest: dict[str, IndexRow] = {}
        for _ in range(40):  # 1,200 writes: one flush (every 1,024), the rest in the memtable
            rows = _rows(rng, 30)
            index.upsert(rows)
            latest.update({row.id: row for row in rows})
        got = list(index.iter_vectors("p1"))
        assert [fid for fid, _ in got] == sorted(fid for fid, row in latest.items() if row.project_id == "p1")
        assert all(np.allclose(vector, latest[fid].vector, atol=1e-6) for fid, vector in got)
    finally:
        index.close()
        lite_search.install()  # the process-wide default the other tests expect
