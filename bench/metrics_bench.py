"""Metrics overhead: streamed and unary ingest with metrics on and off, in one run.

Two real `feedbackloop serve` subprocesses on embedded SQLite stores (pipeline off as in the
ingestion benchmark, tracing sampled off), one with FEEDBACKLOOP_METRICS_PORT set and scraped
every second over HTTP by a thread of this process (thirty times the chart's default scrape
rate; the store gauges are re-read at their default interval), one without any exporter. The
runs alternate between the two servers (off, on, on, off, ...), so a load change on the machine
hits both alike; each figure is the median of its rounds, and the spread of the paired rounds'
ratios is printed beside it. Each server's CPU time per event (from /proc) is printed too: it
moves far less with the machine's other load than the rates do.

Target: metrics cost at most 5% of streamed ingest throughput (on >= 0.95 x off).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from bench.proc_cpu import server_cpu_seconds
from bench.serve_process import free_port, record_interaction, served
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc

TARGET_RATIO = 0.95
UNARY_THREADS = 8


@contextmanager
def _server(data_dir: Path, metrics_port: int) -> Iterator[str]:
    env = {
        "FEEDBACKLOOP_PIPELINE_ENABLED": "false",
        "FEEDBACKLOOP_POLICIES_DIR": "",
        "FEEDBACKLOOP_DATABASE_URL": "",
        "FEEDBACKLOOP_METRICS_PORT": str(metrics_port),
        # Tracing off by sampling, not OTEL_SDK_DISABLED (which turns metrics off too), on both.
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_SAMPLER": "always_off",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    }
    with served(data_dir, env) as address:
        yield address


def _feedback(interaction_id: str, key: str, i: int) -> common_pb2.Feedback:
    return common_pb2.Feedback(
        interaction_id=interaction_id,
        thumb=common_pb2.THUMB_DOWN if i % 3 else common_pb2.THUMB_UP,
        categories=["outdated_info"] if i % 4 == 0 else [],
        comment="The price changed in March." if i % 2 else "",
        idempotency_key=key,
    )


def _stream_eps(address: str, interaction_id: str, prefix: str, events: int) -> float:
    requests = [
        ingestion_pb2.SubmitFeedbackStreamRequest(feedback=_feedback(interaction_id, f"{prefix}-{i}", i))
        for i in range(events)
    ]
    with grpc.insecure_channel(address) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        t0 = time.perf_counter()
        response = stub.SubmitFeedbackStream(iter(requests), timeout=600)
        elapsed = time.perf_counter() - t0
    if response.rejected or response.accepted != events:
        raise RuntimeError(f"stream: {response.accepted} accepted, {response.rejected} rejected")
    return events / elapsed


def _unary_eps(address: str, interaction_id: str, prefix: str, events: int) -> float:
    per_thread = events // UNARY_THREADS
    channels = [grpc.insecure_channel(address) for _ in range(UNARY_THREADS)]
    stubs = [ingestion_pb2_grpc.IngestionServiceStub(c) for c in channels]
    gate = threading.Barrier(UNARY_THREADS + 1)

    def worker(n: int) -> None:
        requests = [
            ingestion_pb2.SubmitFeedbackRequest(feedback=_feedback(interaction_id, f"{prefix}-{n}-{i}", i))
            for i in range(per_thread)
        ]
        gate.wait()
        for request in requests:
            stubs[n].SubmitFeedback(request, timeout=30)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(UNARY_THREADS)]
    for thread in threads:
        thread.start()
    gate.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    for channel in channels:
        channel.close()
    return per_thread * UNARY_THREADS / elapsed


class _Scraper:
    """Scrapes /metrics every `interval` seconds until stopped; counts the scrapes that worked."""

    def __init__(self, port: int, interval: float = 1.0) -> None:
        self._url = f"http://127.0.0.1:{port}/metrics"
        self._interval = interval
        self._stop = threading.Event()
        self.scrapes = 0
        self.last = ""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with urllib.request.urlopen(self._url, timeout=10) as response:
                self.last = response.read().decode()
            self.scrapes += 1


def run(quick: bool = False) -> dict[str, float]:
    rounds = 2 if quick else 5
    stream_events = 2_000 if quick else 10_000
    unary_events = 800 if quick else 4_000
    metrics_port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="fl-metrics-off-") as off_dir,
        tempfile.TemporaryDirectory(prefix="fl-metrics-on-") as on_dir,
        _server(Path(off_dir), 0) as off,
        _server(Path(on_dir), metrics_port) as on,
        _Scraper(metrics_port) as scraper,
    ):
        targets = {"off": (off, record_interaction(off)), "on": (on, record_interaction(on))}
        for name, (address, interaction) in targets.items():  # warm up each server and channel path
            _stream_eps(address, interaction, f"warm-{name}", 200)
        figures: dict[str, list[float]] = {f"{k}_{m}": [] for k in ("stream", "unary") for m in targets}
        cpu: dict[str, float] = dict.fromkeys(figures, 0.0)  # server CPU seconds over the rounds
        for r in range(rounds):
            order = (
                list(targets.items()) if r % 2 == 0 else list(reversed(targets.items()))
            )  # ABBA: drift cancels
            for name, (address, interaction) in order:
                before = server_cpu_seconds(address)
                figures[f"stream_{name}"].append(
                    _stream_eps(address, interaction, f"s{r}-{name}", stream_events)
                )
                middle = server_cpu_seconds(address)
                figures[f"unary_{name}"].append(
                    _unary_eps(address, interaction, f"u{r}-{name}", unary_events)
                )
                cpu[f"stream_{name}"] += middle - before
                cpu[f"unary_{name}"] += server_cpu_seconds(address) - middle
        scrapes = scraper.scrapes
        if "rpc_server_call_duration_seconds_count" not in scraper.last:
            raise RuntimeError(
                f"the metrics server served no gRPC series ({scrapes} scrapes): {scraper.last[:300]!r}"
            )
    results = {key: statistics.median(values) for key, values in figures.items()}
    for kind in ("stream", "unary"):  # the spread of the paired rounds shows the machine's noise
        ratios = [on / off for on, off in zip(figures[f"{kind}_on"], figures[f"{kind}_off"], strict=True)]
        results[f"{kind}_ratio_min"], results[f"{kind}_ratio_max"] = min(ratios), max(ratios)
    results["stream_ratio"] = results["stream_on"] / results["stream_off"]
    results["unary_ratio"] = results["unary_on"] / results["unary_off"]
    for kind in ("stream", "unary"):  # what metrics cost, in percent of the throughput without them
        results[f"{kind}_overhead_pct"] = (1 - results[f"{kind}_ratio"]) * 100
    results["scrapes"] = float(scrapes)
    for kind, events in (("stream", stream_events), ("unary", unary_events)):
        # The scrapes' own cost falls on `on` too, whichever kind of load they met.
        for name in targets:
            results[f"{kind}_cpu_us_{name}"] = cpu[f"{kind}_{name}"] / (rounds * events) * 1e6
        results[f"{kind}_cpu_overhead_pct"] = (
            results[f"{kind}_cpu_us_on"] / results[f"{kind}_cpu_us_off"] - 1
        ) * 100
    _print(results, rounds, stream_events, unary_events)
    return results


def _print(results: dict[str, float], rounds: int, stream_events: int, unary_events: int) -> None:
    print(
        f"metrics overhead: {rounds} alternating rounds of {stream_events:,} streamed and {unary_events:,} unary "
        f"events per server; {results['scrapes']:.0f} scrapes of the metrics server"
    )
    print(
        f"  {'metric':<20} {'off':>8} {'on':>8} {'on/off':>7} {'overhead':>9} {'paired rounds':>15}  target"
    )
    for kind in ("stream", "unary"):
        ratio = results[f"{kind}_ratio"]
        target = f"overhead <= {(1 - TARGET_RATIO) * 100:.0f}%" if kind == "stream" else ""
        verdict = ("ok" if ratio >= TARGET_RATIO else "MISSED") if kind == "stream" else ""
        # Paired rounds' overheads, lowest to highest: the machine's noise beside the figure.
        spread = f"{(1 - results[f'{kind}_ratio_max']) * 100:+.1f}..{(1 - results[f'{kind}_ratio_min']) * 100:+.1f}%"
        print(
            f"  {kind + ' events/s':<20} {results[f'{kind}_off']:>8,.0f} {results[f'{kind}_on']:>8,.0f} "
            f"{ratio:>7.3f} {results[f'{kind}_overhead_pct']:>+8.1f}% {spread:>15}  {target} {verdict}"
        )
    for kind in ("stream", "unary"):
        print(
            f"  {kind + ' CPU us/event':<20} {results[f'{kind}_cpu_us_off']:>8,.1f} "
            f"{results[f'{kind}_cpu_us_on']:>8,.1f} {'':>7} {results[f'{kind}_cpu_overhead_pct']:>+8.1f}%"
            "  (the server's CPU time, all rounds)"
        )


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
