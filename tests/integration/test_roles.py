"""`serve --role all|api|worker`: what each role hosts, readiness, and the options every role shares.

Real servers on loopback, the real model, Milvus Lite; the one fault (a Milvus that cannot be
opened) is real: its directory is blocked by a plain file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import select

from feedbackloop.config import Settings
from feedbackloop.roles import ROLES, Part
from feedbackloop.server import App, StartupError
from feedbackloop.store.models import PipelineJob
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from support import code_of

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
API_SERVICES = {
    "feedbackloop.v1.IngestionService",
    "feedbackloop.v1.IdentityService",
    "feedbackloop.v1.RecallService",
    "feedbackloop.v1.PipelineService",
    "feedbackloop.v1.RoutingService",
    "feedbackloop.v1.PromptService",
    "feedbackloop.v1.DatasetService",
    "feedbackloop.v1.ReviewService",
    "opentelemetry.proto.collector.trace.v1.TraceService",
}
FAST_PIPELINE = {"pipeline_enabled": True, "embedding_batch_max_wait_ms": 0, "pipeline_poll_seconds": 0.05}


def health_of(channel: grpc.Channel, service: str = "") -> Any:
    return (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        .status
    )


def listed_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (response,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return {s.name for s in response.list_services_response.service}


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


def submit(channel: grpc.Channel, comment: str) -> str:
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
    stub.RecordInteraction(  # idempotent: the same turn each time
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(session_id="s-roles", turn_index=0, response="It costs $10.")
        )
    )
    ack = stub.SubmitFeedback(
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=common_pb2.Feedback(session_id="s-roles", comment=comment)
        )
    )
    return str(ack.feedback_id)


def job_of(app: App, feedback_id: str) -> tuple[str, str]:
    with app.db.read() as session:
        job = session.scalars(select(PipelineJob).where(PipelineJob.feedback_id == feedback_id)).one()
        return job.stage, job.status


def test_the_role_table() -> None:
    assert ROLES["all"] == ROLES["api"] | ROLES["worker"]
    assert Part.PIPELINE not in ROLES["api"]
    assert ROLES["worker"] == {Part.PIPELINE}


def test_api_serves_every_service_and_runs_no_pipeline_while_a_worker_runs_it(
    make_server: Callable[..., Any], store_url: str, embedder: Any
) -> None:
    api = make_server(embedder=embedder, database_url=store_url, role="api", **FAST_PIPELINE)
    assert listed_services(api.channel) == API_SERVICES | {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    for service in ("", *API_SERVICES):
        assert health_of(api.channel, service) == SERVING
    feedback_id = submit(api.channel, "the price you quoted is from last year")
    time.sleep(1.0)  # an api process left alone never moves a job
    assert job_of(api.app, feedback_id) == ("index", "pending")

    # Its own data directory: a Milvus Lite file is open in one server at a time.
    worker = make_server(embedder=embedder, database_url=store_url, role="worker", **FAST_PIPELINE)
    wait_for(lambda: job_of(api.app, feedback_id) == ("route", "done"))
    assert health_of(worker.channel) == SERVING
    # The worker serves its health and nothing else: no API, no reflection, no service names.
    code, _ = code_of(lambda: submit(worker.channel, "x"))
    assert code == grpc.StatusCode.UNIMPLEMENTED
    code, _ = code_of(lambda: listed_services(worker.channel))
    assert code == grpc.StatusCode.UNIMPLEMENTED
    code, _ = code_of(lambda: health_of(worker.channel, "feedbackloop.v1.IngestionService"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_a_worker_needs_no_api_key_where_the_api_does(tmp_path: Path) -> None:
    # Nothing is bound: whether a non-loopback server must refuse to start without keys
    # depends on whether it serves an RPC that needs one.
    def app(role: str) -> App:
        return App(Settings(role=role, host="0.0.0.0", data_dir=tmp_path, policies_dir=None))

    assert not app("worker")._serves_authenticated_rpcs()
    assert app("api")._serves_authenticated_rpcs()
    assert app("all")._serves_authenticated_rpcs()


def test_a_worker_with_the_pipeline_off_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(StartupError) as raised:
        App(Settings(role="worker", pipeline_enabled=False, data_dir=tmp_path))
    assert str(raised.value) == (
        "the worker role runs only the pipeline, which FEEDBACKLOOP_PIPELINE_ENABLED=false turns off"
    )


@pytest.mark.parametrize("role", ["api", "worker"])
def test_health_is_not_serving_until_milvus_can_be_opened(
    make_server: Callable[..., Any], embedder: Any, tmp_path: Path, role: str
) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("not a directory")
    server = make_server(
        embedder=embedder, role=role, milvus_uri=str(blocker / "milvus.db"), wait_ready=False, **FAST_PIPELINE
    )
    names = [""] + (sorted(API_SERVICES) if role == "api" else [])
    time.sleep(1.0)  # the readiness check has failed and retried by now
    assert [health_of(server.channel, name) for name in names] == [NOT_SERVING] * len(names)
    assert server.app.readiness.waiting_for == f"Milvus at {blocker / 'milvus.db'}"
    blocker.unlink()
    assert server.app.wait_ready(timeout=30)
    assert [health_of(server.channel, name) for name in names] == [SERVING] * len(names)


def test_with_auto_migrate_off_an_empty_or_older_schema_is_refused(store_url: str, tmp_path: Path) -> None:
    def start() -> str:
        app = App(
            Settings(
                host="127.0.0.1",
                port=0,
                data_dir=tmp_path,
                database_url=store_url,
                auto_migrate=False,
                policies_dir=None,
                role="api",
            )
        )
        try:
            with pytest.raises(StartupError) as raised:
                app.start()
            assert app.server is None
            return str(raised.value)
        finally:
            app.db.dispose()

    assert start() == (  # the test URLs hold no password to hide
        f"the database at {store_url} has no schema and FEEDBACKLOOP_AUTO_MIGRATE is off: "
        "run `feedbackloop db upgrade` first"
    )
    app = App(Settings(data_dir=tmp_path, database_url=store_url, policies_dir=None))
    app.db.upgrade("0005")
    head = app.db.head_revision()
    app.db.dispose()
    assert start() == (
        f"the database schema is at revision 0005, the code needs {head}: run `feedbackloop db upgrade`"
    )
    assert head != "0005"


@pytest.mark.parametrize(("age", "reconnects"), [(0.5, True), (0.0, False)])
def test_connections_older_than_the_max_age_are_sent_away(
    make_server: Callable[..., Any], age: float, reconnects: bool
) -> None:
    server = make_server(max_connection_age_seconds=age, max_connection_age_grace_seconds=0.5)
    channel = grpc.insecure_channel(server.address)
    states: list[str] = []
    channel.subscribe(lambda state: states.append(state.name))
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
    try:
        stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(), timeout=5)
        time.sleep(2.0)  # past the age (plus gRPC's 10% jitter) and its grace
        stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(), timeout=5)  # on a new connection if sent away
        time.sleep(0.2)
    finally:
        channel.close()
    first_ready = states.index("READY")
    after = states[first_ready + 1 :]
    if reconnects:
        # GOAWAY: the channel goes idle, and the next call connects again.
        assert after[0] == "IDLE" and "READY" in after[1:], states
    else:
        assert after == [], states
