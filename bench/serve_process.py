"""A real `feedbackloop serve` as a subprocess, for the benchmarks that measure over gRPC.

A subprocess, not an in-process App, so the benchmark's client threads do not share the
server's GIL. The server's output goes to a log file in its data directory, which an error
quotes when the server exits or never reports SERVING.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(proc: subprocess.Popen[bytes], address: str, log_path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"server not serving after {timeout}s:\n{log_path.read_text()}")


@contextmanager
def served(
    data_dir: Path,
    env: Mapping[str, str],
    *,
    log_name: str = "server.log",
    append_log: bool = False,
    ready_timeout: float = 120.0,
    stop_timeout: float = 10.0,
) -> Iterator[str]:
    """Serve on a free loopback port with `env` over this process's environment; yields the address.

    `stop_timeout` is how long SIGTERM may take before SIGKILL (a server with a pipeline drains).
    """
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / log_name.format(port=port)
    command = [sys.executable, "-m", "feedbackloop.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "ab" if append_log else "wb") as log:
        proc = subprocess.Popen(
            [*command, "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FEEDBACKLOOP_CONSOLE": "off", **env},  # benches that want it ask
            cwd=data_dir,
        )
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(proc, address, log_path, timeout=ready_timeout)
        yield address
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def record_interaction(address: str, response: str = "It costs $10.") -> str:
    """One interaction for a benchmark's feedback to hang on; its id."""
    with grpc.insecure_channel(address) as channel:
        request = ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(session_id="bench", turn_index=0, response=response)
        )
        return str(ingestion_pb2_grpc.IngestionServiceStub(channel).RecordInteraction(request).interaction_id)
