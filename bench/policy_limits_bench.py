"""What the policy cost limits buy: the slowest condition they accept, and a server's health
checks while such a condition is validated over and over.

1. For each kind of expensive condition (nested comprehensions over literal lists, map and
   filter, regexes, scans of event fields), the largest one under EXPRESSION_COST_LIMIT is
   found by bisection and timed with the `cel` package on the largest event ingestion
   accepts (every text field full, with multi-byte characters, within one 4 MiB message).
   Target: the slowest evaluates in a few milliseconds.
2. A real `feedbackloop serve` answers gRPC health checks while two clients call
   ValidatePolicies with the slowest accepted condition in a loop (validation compiles it
   and evaluates it on two sample events). Target: health check p99 < 100 ms.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cel
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.ingestion_bench import _percentile, _server
from feedbackloop.policy.cost import cost_problem, estimate_cost
from feedbackloop.policy.event import make_event
from feedbackloop.v1 import routing_pb2, routing_pb2_grpc

TARGET_HEALTH_P99_MS = 100.0


def _ints(n: int) -> str:
    return "[" + ",".join(str(i) for i in range(n)) + "]"


def _words(n: int) -> str:
    return "[" + ",".join(f'"word{i:05d}"' for i in range(n)) + "]"


# name -> condition for a size n; each grows with n, so the largest accepted n is the worst.
FAMILIES: dict[str, Callable[[int], str]] = {
    "two nested all": lambda n: f"{_ints(n)}.all(x, {_ints(n)}.all(y, x + y >= 0))",
    "three nested all": lambda n: f"{_ints(n)}.all(x, {_ints(n)}.all(y, {_ints(n)}.all(z, x + y + z >= 0)))",
    "map": lambda n: f"{_ints(n)}.map(x, x * 2).size() > 0",
    "filter": lambda n: f"{_ints(n)}.filter(x, x % 2 == 0).size() > 0",
    "exists over strings": lambda n: f'{_words(n)}.exists(w, w.contains("zz") || w.startsWith("q"))',
    "in over a literal": lambda n: f"feedback.rating in {_ints(n)}",
    "regex over the response": lambda n: f'interaction.response.matches("{"[a-z]" * n}")',
    "regex over messages": lambda n: f'interaction.input_messages.exists(m, m.content.matches("{"a" * n}"))',
    "attribute lookups": lambda n: " || ".join(f'"k{i}" in feedback.attributes' for i in range(n)),
    "attribute keys": lambda n: " || ".join(['feedback.attributes.exists(k, k.startsWith("x"))'] * n),
    "documents": lambda n: " || ".join(["interaction.context_documents.exists(d, d.score > 0.9)"] * n),
}


def _accepted(source: str) -> bool:
    return cost_problem(source)[1] is None  # the length limit and the cost limit


def largest_accepted(family: Callable[[int], str]) -> int:
    """The largest n whose condition validation accepts (0 if none is)."""
    low, high = 0, 1
    while _accepted(family(high)) and high < 1 << 20:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if _accepted(family(mid)):
            low = mid
        else:
            high = mid
    return low


def maximal_event() -> dict[str, Any]:
    """The largest event ingestion accepts: full text fields, 2-4 byte characters, each
    record within one 4 MiB message."""
    wide = "é"  # 2 bytes in UTF-8
    emoji = "\U0001f600"  # 4 bytes
    return make_event(
        {
            "feedback": {
                "comment": emoji * 32_000,
                "correction": emoji * 32_000,
                "categories": ["c" * 128] * 16,
                # 64 values of 32,000 two-byte characters: just under 4 MiB.
                "attributes": {f"k{i:03d}" + "k" * 124: wide * 32_000 for i in range(64)},
            },
            "interaction": {
                "input_messages": [{"role": "user", "content": wide * 2_000}] * 512,
                "context_documents": [{"id": "d" * 128, "text": wide * 4_000, "score": 0.5}] * 256,
                "response": emoji * 32_000,
                "attributes": {f"k{i:03d}": "v" for i in range(64)},
            },
        }
    )


def _time_ms(program: Any, context: Any, repeats: int) -> float:
    program.execute(context)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        with contextlib.suppress(Exception):  # a missing key ran to where it failed: timed all the same
            program.execute(context)
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def worst_accepted(quick: bool = False) -> list[tuple[str, int, int, float, str]]:
    """(family, n, estimate, ms, condition) for the largest accepted condition of each family,
    slowest first."""
    context = cel.Context(maximal_event())
    rows = []
    for name, family in FAMILIES.items():
        n = largest_accepted(family)
        if n == 0:
            continue
        source = family(n)
        program = cel.compile(source)
        try:
            ms = _time_ms(program, context, 3 if quick else 7)
        except Exception:
            continue
        rows.append((name, n, estimate_cost(source), ms, source))
    rows.sort(key=lambda r: -r[3])
    return rows


def _policy_files(condition: str) -> list[routing_pb2.PolicyFile]:
    text = (
        "apiVersion: feedbackloop/v1\nkind: ReviewQueue\nmetadata: {name: q}\nspec: {sla: 1h}\n---\n"
        "apiVersion: feedbackloop/v1\nkind: RoutingPolicy\nmetadata: {name: worst}\nspec:\n"
        f"  when: '{condition}'\n  actions: [{{human_review: {{queue: q}}}}]\n"
    )
    return [routing_pb2.PolicyFile(path="worst.yaml", content=text)]


def health_during_validation(condition: str, quick: bool = False) -> dict[str, float]:
    checks = 200 if quick else 1_000
    with tempfile.TemporaryDirectory() as tmp, _server(Path(tmp)) as address:
        stop = threading.Event()
        validations = [0]

        def validate() -> None:
            with grpc.insecure_channel(address) as channel:
                stub = routing_pb2_grpc.RoutingServiceStub(channel)
                request = routing_pb2.ValidatePoliciesRequest(files=_policy_files(condition))
                while not stop.is_set():
                    response = stub.ValidatePolicies(request, timeout=30)
                    assert response.valid, response.problems
                    validations[0] += 1

        workers = [threading.Thread(target=validate) for _ in range(2)]
        for worker in workers:
            worker.start()
        latencies: list[float] = []
        started = time.perf_counter()
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            for _ in range(checks):
                t0 = time.perf_counter()
                health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                latencies.append((time.perf_counter() - t0) * 1e3)
                time.sleep(0.005)
        elapsed = time.perf_counter() - started
        stop.set()
        for worker in workers:
            worker.join()
    latencies.sort()
    return {
        "health_p50_ms": statistics.median(latencies),
        "health_p99_ms": _percentile(latencies, 99),
        "health_max_ms": latencies[-1],
        "validations_per_s": validations[0] / elapsed,
    }


def run(quick: bool = False) -> dict[str, float]:
    rows = worst_accepted(quick)
    for name, n, estimate, ms, _ in rows:
        print(f"  {name:<26} n={n:<6} estimate {estimate:>8,}  {ms:7.2f} ms on a maximal event")
    name, n, estimate, worst_ms, condition = rows[0]
    print(f"slowest accepted condition: {name} (n={n}), {worst_ms:.2f} ms")
    health = health_during_validation(condition, quick)
    print(
        f"health checks while validating it (2 clients, {health['validations_per_s']:.0f} validations/s): "
        f"p50 {health['health_p50_ms']:.2f} ms, p99 {health['health_p99_ms']:.2f} ms "
        f"(target < {TARGET_HEALTH_P99_MS:.0f}), max {health['health_max_ms']:.2f} ms"
    )
    return {"worst_accepted_ms": worst_ms, "worst_accepted_estimate": float(estimate), **health}


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
