"""Run the benchmarks that exist: `python -m bench [--quick] [--only NAME]`.

Each module is imported lazily, so a missing (or not yet written) benchmark is skipped rather
than breaking the others. The summary names the machine, since the figures mean little without it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import platform
import sys
import time
from typing import Any

BENCHMARKS = (
    "ingestion_bench",
    "recall_bench",
    "pipeline_bench",
    "routing_bench",
    "policy_bench",
    "policy_limits_bench",
    "aggregate_bench",
    "ingest_search_bench",
    "roles_bench",
    "top_issues_bench",
    "otlp_bench",
    "metrics_bench",
    "console_bench",
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {cores} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (a smoke test; figures not meaningful)"
    )
    parser.add_argument("--only", choices=BENCHMARKS, help="run this benchmark only")
    args = parser.parse_args(argv)

    names = [args.only] if args.only else list(BENCHMARKS)
    results: dict[str, dict[str, float] | str] = {}
    for name in names:
        try:
            module: Any = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as error:
            if error.name not in (f"bench.{name}", "bench"):
                raise  # the benchmark exists but a dependency of it is missing: say so
            print(f"== {name}: not present, skipped")
            results[name] = "skipped (module missing)"
            continue
        print(f"== {name}")
        run = module.run
        started = time.perf_counter()
        figures = run(quick=args.quick) if "quick" in inspect.signature(run).parameters else run()
        print(f"   ({time.perf_counter() - started:.1f} s)")
        results[name] = figures

    print()
    print(f"machine: {machine()}")
    print(f"mode: {'quick' if args.quick else 'full'}")
    for name, figures in results.items():
        if isinstance(figures, str):
            print(f"{name}: {figures}")
            continue
        print(f"{name}:")
        for key, value in figures.items():
            print(f"  {key:<32} {value:>14,.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
