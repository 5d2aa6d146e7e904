"""A real Milvus server for tests: `milvus-server` from the `milvus` PyPI package (2.3.5).

`start_milvus_server(data_dir)` runs `milvus-server --data DIR --proxy-port PORT` in its own
process group on a free loopback port, waits until a client can list collections, and on exit
kills the whole group (the launcher and the milvus binary it spawns) by process id.

The pytest fixture `milvus_server_uri` (session scope) skips with the reason when the server
cannot start, or fails instead when FEEDBACKLOOP_REQUIRE_MILVUS_SERVER=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRE_ENV = "FEEDBACKLOOP_REQUIRE_MILVUS_SERVER"
START_TIMEOUT_S = 90.0


class MilvusServerError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launcher() -> str:
    exe = Path(sys.executable).with_name("milvus-server")
    if exe.exists():
        return str(exe)
    found = shutil.which("milvus-server")
    if not found:
        raise MilvusServerError("milvus-server not found (pip install milvus==2.3.5)")
    return found


def _ready(uri: str) -> bool:
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=3)
    except Exception:
        return False
    try:
        client.list_collections(timeout=3)
        return True
    except Exception:
        return False
    finally:
        client.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The launcher is gone; make sure nothing else of its group is left.
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)


@contextmanager
def start_milvus_server(data_dir: Path, timeout: float = START_TIMEOUT_S) -> Iterator[str]:
    """Run a Milvus server with its data under `data_dir`; yields its `http://127.0.0.1:PORT` URI."""
    port = _free_port()
    log_path = data_dir / "launcher.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [_launcher(), "--data", str(data_dir / "milvus"), "--proxy-port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: one killpg ends the launcher and milvus
            cwd=data_dir,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _ready(uri):
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise MilvusServerError(f"milvus-server exited with {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise MilvusServerError(f"milvus-server not ready on {uri} after {timeout:.0f}s")
            time.sleep(1.0)
        yield uri
    finally:
        _kill_group(proc)


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        with start_milvus_server(tmp_path_factory.mktemp("milvus-server")) as uri:
            yield uri
            return
    except MilvusServerError as exc:
        reason = f"real Milvus server unavailable: {exc}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)
