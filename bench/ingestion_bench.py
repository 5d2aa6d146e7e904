"""Ingestion benchmark: unary SubmitFeedback throughput and latency, and client-stream throughput.

A real `feedbackloop serve` runs as a subprocess (so the client's threads do not share its GIL) on
an embedded SQLite store in a temporary directory, with the pipeline disabled. Then:

- unary: 8 client threads, each with its own channel, submit N events (each a new feedback row
  plus its pipeline job, committed before the ack); events/s over the whole run and per-call
  latency percentiles (p50/p95/p99);
- stream: one SubmitFeedbackStream call carrying M events; acked events/s from the first send
  to the response.

Targets: stream >= 5,000 events/s; unary >= 1,000 events/s with p99 < 25 ms.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from bench.serve_process import record_interaction, served
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc

UNARY_THREADS = 8
TARGET_STREAM_EPS = 5_000.0
TARGET_UNARY_EPS = 1_000.0
TARGET_UNARY_P99_MS = 25.0


@contextmanager
def _server(data_dir: Path) -> Iterator[str]:
    """An ingest-only server: the pipeline is off, so only ingestion is measured."""
    env = {
        "FEEDBACKLOOP_PIPELINE_ENABLED": "false",
        "FEEDBACKLOOP_POLICIES_DIR": "",
        "FEEDBACKLOOP_DATABASE_URL": "",
        "OTEL_SDK_DISABLED": "true",
    }
    with served(data_dir, env) as address:
        yield address


def _feedback(interaction_id: str, key: str, i: int) -> common_pb2.Feedback:
    return common_pb2.Feedback(
        interaction_id=interaction_id,
        thumb=common_pb2.THUMB_DOWN if i % 3 else common_pb2.THUMB_UP,
        rating=1 + i % 5,
        categories=["outdated_info"] if i % 4 == 0 else [],
        comment="The price changed in March." if i % 2 else "",
        idempotency_key=key,
    )


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def _unary(address: str, interaction_id: str, events: int) -> dict[str, float]:
    per_thread = events // UNARY_THREADS
    latencies: list[list[float]] = [[] for _ in range(UNARY_THREADS)]
    channels = [grpc.insecure_channel(address) for _ in range(UNARY_THREADS)]
    stubs = [ingestion_pb2_grpc.IngestionServiceStub(c) for c in channels]
    for stub in stubs:  # connect and warm each channel
        stub.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(feedback=_feedback(interaction_id, "", 1)), timeout=10
        )
    start_gate = threading.Barrier(UNARY_THREADS + 1)

    def worker(n: int) -> None:
        stub, own = stubs[n], latencies[n]
        requests = [
            ingestion_pb2.SubmitFeedbackRequest(feedback=_feedback(interaction_id, f"u{n}-{i}", i))
            for i in range(per_thread)
        ]
        start_gate.wait()
        for request in requests:
            t0 = time.perf_counter()
            stub.SubmitFeedback(request, timeout=30)
            own.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(UNARY_THREADS)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    for channel in channels:
        channel.close()
    flat = sorted(x for own in latencies for x in own)
    return {
        "unary_events": float(len(flat)),
        "unary_events_per_s": len(flat) / elapsed,
        "unary_p50_ms": _percentile(flat, 50) * 1000,
        "unary_p95_ms": _percentile(flat, 95) * 1000,
        "unary_p99_ms": _percentile(flat, 99) * 1000,
        "unary_mean_ms": statistics.fmean(flat) * 1000,
    }


def _stream(address: str, interaction_id: str, events: int) -> dict[str, float]:
    requests = [
        ingestion_pb2.SubmitFeedbackStreamRequest(feedback=_feedback(interaction_id, f"s-{i}", i))
        for i in range(events)
    ]
    with grpc.insecure_channel(address) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        stub.SubmitFeedbackStream(iter(requests[:10]), timeout=60)  # warm-up (replayed below: not counted)
        t0 = time.perf_counter()
        response = stub.SubmitFeedbackStream(iter(requests[10:]), timeout=600)
        elapsed = time.perf_counter() - t0
    if response.rejected:
        raise RuntimeError(f"{response.rejected} streamed events rejected: {response.acks[0]}")
    return {"stream_events": float(response.accepted), "stream_events_per_s": response.accepted / elapsed}


def run(quick: bool = False) -> dict[str, float]:
    unary_events = 1_600 if quick else 8_000
    stream_events = 2_000 if quick else 20_000
    with tempfile.TemporaryDirectory(prefix="fl-ingestion-bench-") as tmp, _server(Path(tmp)) as address:
        interaction_id = record_interaction(address, "Our plan costs $10.")
        results = _unary(address, interaction_id, unary_events)
        results.update(_stream(address, interaction_id, stream_events))
    _print(results)
    return results


def _print(results: dict[str, float]) -> None:
    rows = [
        ("unary events/s (8 threads)", results["unary_events_per_s"], f">= {TARGET_UNARY_EPS:,.0f}",
         results["unary_events_per_s"] >= TARGET_UNARY_EPS),
        ("unary p50 latency (ms)", results["unary_p50_ms"], "", None),
        ("unary p95 latency (ms)", results["unary_p95_ms"], "", None),
        ("unary p99 latency (ms)", results["unary_p99_ms"], f"< {TARGET_UNARY_P99_MS:.0f}",
         results["unary_p99_ms"] < TARGET_UNARY_P99_MS),
        ("stream acked events/s", results["stream_events_per_s"], f">= {TARGET_STREAM_EPS:,.0f}",
         results["stream_events_per_s"] >= TARGET_STREAM_EPS),
    ]  # fmt: skip
    print(
        f"ingestion: {results['unary_events']:,.0f} unary events, {results['stream_events']:,.0f} streamed events"
    )
    print(f"  {'metric':<28} {'value':>10}  {'target':<10} result")
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        print(f"  {name:<28} {value:>10,.1f}  {target:<10} {verdict}")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
