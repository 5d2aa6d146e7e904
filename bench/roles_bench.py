"""Scaling out by role, on PostgreSQL: what a second `api` or `worker` process adds.

- ingest: SubmitFeedbackStream into one `serve --role api` process, then into two (the same
  streams, split between them); acked events/s of the whole run, and two over one as a ratio;
- pipeline: feedback committed with its jobs while one `serve --role worker` process (then
  two) is idle and ready, with the example policies live; routed events/s until every job is
  done (claim, embed, upsert into a Milvus server, route), and two over one.

Every process is a real `feedbackloop serve` subprocess (each with its own GIL), on a fresh
PostgreSQL database (on the server FEEDBACKLOOP_TEST_POSTGRES_URL names) and,
for the workers, a real Milvus server (`milvus-server`, as the tests start it). On a machine
with as many cores as processes the ratios approach 2; on 2 cores they cannot: the servers,
PostgreSQL, Milvus and the client share them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench.pipeline_bench import _seed
from bench.serve_process import record_interaction, served
from feedbackloop.policy import validate_dir
from feedbackloop.routing.revisions import LivePolicies
from feedbackloop.store.db import Database
from feedbackloop.store.models import PipelineJob
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
POSTGRES_ENV = "FEEDBACKLOOP_TEST_POSTGRES_URL"
STREAMS_PER_RUN = 4  # concurrent client streams in every run, whatever the number of servers


def _postgres_base() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@contextmanager
def _fresh_database(base_url: str) -> Iterator[str]:
    import psycopg

    base = make_url(base_url)
    name = f"fl_bench_{uuid.uuid4().hex[:12]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        db = Database(url)
        db.upgrade()
        db.dispose()
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _serve(role: str, url: str, data_dir: Path, milvus_uri: str | None = None) -> Iterator[str]:
    env = {
        "FEEDBACKLOOP_ROLE": role,
        "FEEDBACKLOOP_DATABASE_URL": url,
        "FEEDBACKLOOP_AUTO_MIGRATE": "false",
        "FEEDBACKLOOP_POLICIES_DIR": "",
        "FEEDBACKLOOP_PIPELINE_POLL_SECONDS": "0.05",
        "FEEDBACKLOOP_MILVUS_COLLECTION": "bench_roles",
        "OTEL_SDK_DISABLED": "true",
    }
    if milvus_uri:
        env["FEEDBACKLOOP_MILVUS_URI"] = milvus_uri
    with served(data_dir, env, log_name=role + "-{port}.log", ready_timeout=180, stop_timeout=20) as address:
        yield address


def _ingest(addresses: list[str], events: int) -> float:
    """Acked events/s over STREAMS_PER_RUN concurrent streams spread over `addresses`."""
    interaction_id = record_interaction(addresses[0], "It costs $10.")
    per_stream = events // STREAMS_PER_RUN
    tag = uuid.uuid4().hex[:6]
    batches = [
        [
            ingestion_pb2.SubmitFeedbackStreamRequest(
                feedback=common_pb2.Feedback(
                    interaction_id=interaction_id,
                    thumb=common_pb2.THUMB_DOWN,
                    comment="The price changed in March." if i % 2 else "",
                    idempotency_key=f"{tag}-{s}-{i}",
                )
            )
            for i in range(per_stream)
        ]
        for s in range(STREAMS_PER_RUN)
    ]
    channels = [grpc.insecure_channel(addresses[s % len(addresses)]) for s in range(STREAMS_PER_RUN)]
    accepted = [0] * STREAMS_PER_RUN
    gate = threading.Barrier(STREAMS_PER_RUN + 1)

    def stream(s: int) -> None:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channels[s])
        stub.SubmitFeedbackStream(iter(batches[s][:5]), timeout=60)  # connect (replayed below)
        gate.wait()
        accepted[s] = stub.SubmitFeedbackStream(iter(batches[s]), timeout=600).accepted

    threads = [threading.Thread(target=stream, args=(s,)) for s in range(STREAMS_PER_RUN)]
    for thread in threads:
        thread.start()
    gate.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    for channel in channels:
        channel.close()
    return sum(accepted) / elapsed


def _route(url: str, workers: int, events: int, milvus_uri: str, tmp: Path) -> float:
    """Routed events/s with `workers` ready worker processes and `events` jobs committed at once."""
    with _fresh_database(url) as fresh, ExitStack() as stack:
        db = Database(fresh)
        policy_set, errors = validate_dir(REPO / "policies")
        assert policy_set is not None, errors
        _seed(db, 0)  # the project and its interaction
        LivePolicies(db).apply("bench", policy_set, expected_revision=None, applied_by="bench")
        for n in range(workers):
            stack.enter_context(_serve("worker", fresh, tmp / f"w{workers}-{n}", milvus_uri))
        t0 = time.perf_counter()
        _seed(db, events)
        while True:
            with db.read() as session:
                done = session.scalar(
                    select(func.count()).select_from(PipelineJob).where(PipelineJob.status == "done")
                )
            if (done or 0) >= events:
                break
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
        db.dispose()
        return events / elapsed


def run(quick: bool = False) -> dict[str, float]:
    base = _postgres_base()
    if base is None:
        print(f"   skipped: set {POSTGRES_ENV} to a PostgreSQL URL")
        return {}
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    from milvus_server import start_milvus_server

    ingest_events = 4_000 if quick else 40_000
    route_events = 300 if quick else 2_000
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fl-roles-bench-") as name:
        tmp = Path(name)
        with _fresh_database(base) as url:
            with _serve("api", url, tmp / "api1") as one:
                results["ingest_1_api_events_per_s"] = _ingest([one], ingest_events)
            with _serve("api", url, tmp / "api2a") as a, _serve("api", url, tmp / "api2b") as b:
                results["ingest_2_api_events_per_s"] = _ingest([a, b], ingest_events)
        results["ingest_2_over_1"] = (
            results["ingest_2_api_events_per_s"] / results["ingest_1_api_events_per_s"]
        )
        with start_milvus_server(tmp / "milvus", timeout=240) as milvus_uri:
            results["route_1_worker_events_per_s"] = _route(base, 1, route_events, milvus_uri, tmp)
            results["route_2_worker_events_per_s"] = _route(base, 2, route_events, milvus_uri, tmp)
        results["route_2_over_1"] = (
            results["route_2_worker_events_per_s"] / results["route_1_worker_events_per_s"]
        )
    for key, value in results.items():
        print(f"   {key:<32} {value:>10,.2f}")
    return results


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
