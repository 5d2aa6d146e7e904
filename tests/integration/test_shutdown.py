"""Graceful shutdown finishes within its grace period (plus the stop margins), whatever runs.

A stuck client stream, a pipeline batch that finishes in time and one that never does, the
real `feedbackloop serve` process on SIGTERM, and a second server on a port already in use.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from feedbackloop.config import Settings
from feedbackloop.pipeline.jobs import ClaimedJob
from feedbackloop.pipeline.worker import StageWorker
from feedbackloop.server import CANCEL_MARGIN_SECONDS, CLOSE_MARGIN_SECONDS, App, StartupError
from feedbackloop.store.db import Database
from feedbackloop.store.models import PipelineJob
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from support import code_of

GRACE = 1.0
# What stop may take at most, plus scheduling slack on a loaded test machine.
BOUND = GRACE + CANCEL_MARGIN_SECONDS + CLOSE_MARGIN_SECONDS + 1.0
REPO = Path(__file__).resolve().parents[2]


def timed_stop(app: App, grace: float = GRACE) -> tuple[bool | None, float]:
    """(what stop returned, seconds it took); None if it had not returned after 30 s."""
    outcome: list[bool] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: outcome.append(app.stop(grace)), daemon=True)
    thread.start()
    thread.join(30)
    return (outcome[0] if outcome else None), time.monotonic() - started


def test_a_stuck_client_stream_is_cancelled_at_the_end_of_the_grace(make_server: Any, store_url: str) -> None:
    server = make_server(database_url=store_url)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    release = threading.Event()

    def nothing_sent() -> Iterator[ingestion_pb2.SubmitFeedbackStreamRequest]:
        release.wait(30)  # a client that opens the stream and never sends
        yield from ()

    future = stub.SubmitFeedbackStream.future(nothing_sent(), timeout=30)
    time.sleep(0.3)  # the call reaches the servicer, which waits for a first message
    clean, took = timed_stop(server.app)
    release.set()
    assert clean is True
    assert GRACE <= took < BOUND
    assert future.exception(5) is not None and future.code() in (  # type: ignore[union-attr]
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
    )


class SlowStage:
    """A stage whose batch takes `seconds`, or until released: a model or Milvus that hangs
    cannot be produced on demand, so this stands in for one."""

    name = "index"
    batch_size = 8
    max_wait_seconds = 0.0

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = threading.Event()
        self.release = threading.Event()

    def process(self, jobs: list[ClaimedJob]) -> dict[int, str | None]:
        self.started.set()
        self.release.wait(self.seconds)
        return {job.id: None for job in jobs}


def pipeline_busy_with(make_server: Callable[..., Any], store_url: str, stage: SlowStage) -> Any:
    server = make_server(database_url=store_url)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    stub.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(session_id="s", turn_index=0, response="hi")
        )
    )
    stub.SubmitFeedback(
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=common_pb2.Feedback(session_id="s", thumb=common_pb2.THUMB_UP)
        )
    )
    app = server.app
    worker = StageWorker(app.queue, stage, poll_seconds=0.05, wake=app.wake_index)
    app.workers.append(worker)
    worker.start()
    assert stage.started.wait(10)
    return server


def job_stages(database_url: str) -> list[tuple[str, str]]:
    """The jobs' (stage, status), read through a connection of the test's own."""
    db = Database(database_url)
    try:
        with db.read() as session:
            return [(job.stage, job.status) for job in session.scalars(select(PipelineJob))]
    finally:
        db.dispose()


def test_a_batch_in_hand_finishes_within_the_grace(make_server: Any, store_url: str) -> None:
    stage = SlowStage(seconds=0.5)
    server = pipeline_busy_with(make_server, store_url, stage)
    db_url = server.app.settings.effective_database_url
    clean, took = timed_stop(server.app, grace=3.0)
    assert clean is True
    assert took < 3.0
    assert job_stages(db_url) == [("route", "pending")]  # the batch was processed and advanced


def test_a_batch_that_never_ends_is_abandoned_at_the_bound(
    make_server: Any, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    stage = SlowStage(seconds=60)
    server = pipeline_busy_with(make_server, store_url, stage)
    db_url = server.app.settings.effective_database_url
    clean, took = timed_stop(server.app)
    try:
        assert clean is False
        assert took < BOUND
        assert "pipeline stage index (mid-batch)" in caplog.text
        assert job_stages(db_url) == [("index", "pending")]  # still leased: retried after the lease
    finally:
        stage.release.set()


def serve_command(port: int, data_dir: Path) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "FEEDBACKLOOP_PORT": str(port),
        "FEEDBACKLOOP_HOST": "127.0.0.1",
        "FEEDBACKLOOP_DATA_DIR": str(data_dir),
        "FEEDBACKLOOP_DATABASE_URL": "",
        "FEEDBACKLOOP_PIPELINE_ENABLED": "false",
        "FEEDBACKLOOP_POLICIES_DIR": "",
        "FEEDBACKLOOP_SHUTDOWN_GRACE_SECONDS": str(GRACE),
        "OTEL_SDK_DISABLED": "true",
    }
    return [sys.executable, "-m", "feedbackloop.cli", "serve"], env


def test_sigterm_stops_serve_within_its_grace_despite_a_stuck_stream(tmp_path: Path) -> None:
    from test_durability import free_port

    port = free_port()
    command, env = serve_command(port, tmp_path / "data")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    release = threading.Event()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)

        def nothing_sent() -> Iterator[ingestion_pb2.SubmitFeedbackStreamRequest]:
            release.wait(30)
            yield from ()

        stub.SubmitFeedbackStream.future(nothing_sent(), timeout=30)
        # And a malformed stream, which used to leave a call that never completed.
        raw = channel.stream_unary("/feedbackloop.v1.IngestionService/SubmitFeedbackStream")
        code, _ = code_of(lambda: raw(iter([b"\x0a\x02\xff\xfe", b""]), timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        assert time.monotonic() - started < BOUND + 1.0  # + the interpreter's exit
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"signal {signal.SIGTERM.value}: shutting down (in-flight calls get 1.0 s" in text
    assert "Exception deserializing" not in text and "Traceback" not in text


def test_a_second_server_on_the_same_port_refuses_to_start(
    make_server: Any, store_url: str, tmp_path: Path
) -> None:
    first = make_server(database_url=store_url)
    second = App(
        Settings(
            host="127.0.0.1",
            port=first.app.port,
            data_dir=tmp_path / "second",
            pipeline_enabled=False,
            policies_dir=None,
        )
    )
    message = (
        f"port {first.app.port} is already in use on 127.0.0.1: another process (perhaps another "
        "`feedbackloop serve`) is listening there. Stop it, or choose another port with --port or "
        "FEEDBACKLOOP_PORT"
    )
    try:
        with pytest.raises(StartupError) as refused:
            second.start()
        assert str(refused.value) == message
    finally:
        second.stop(0)

    # And as a process: `serve` exits 2 with that message, and the first server keeps its port.
    command, env = serve_command(first.app.port, tmp_path / "third")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
    stub = first.stub(ingestion_pb2_grpc.IngestionServiceStub)
    assert stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(), timeout=10).feedback == []
