"""CPU time of a `feedbackloop serve` subprocess, read from Linux /proc.

On a shared machine a benchmark's rates move with the other load; the CPU time a server spends
per event moves much less, so the benchmarks print it beside their rates.
"""

from __future__ import annotations

import os
from pathlib import Path


def server_cpu_seconds(address: str = "") -> float:
    """User + system CPU seconds of this process's `feedbackloop serve` child (the one serving
    `address`, host:port, when given); NaN where /proc cannot tell."""
    port = address.rsplit(":", 1)[-1].encode() if address else b""
    ticks = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != os.getpid():  # fields[1]: the parent's pid
                continue
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if b"feedbackloop.cli" in argv and b"serve" in argv and (not port or port in argv):
            return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return float("nan")
