"""API keys against a real server: authentication, scopes, projects, open services, startup rules."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from ingestion_support import counts, submit

from feedbackloop.auth import Scope
from feedbackloop.config import Settings
from feedbackloop.server import App, StartupError
from feedbackloop.store import keys
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from support import bearer, expect_error

S = common_pb2
REPO = Path(__file__).resolve().parents[3]


def test_keys_scopes_and_projects(make_server, store_url, db) -> None:  # type: ignore[no-untyped-def]
    ingest = keys.create_key(db, "acme", frozenset({Scope.INGEST}))
    read = keys.create_key(db, "acme", frozenset({Scope.READ}))
    admin = keys.create_key(db, "acme", frozenset({Scope.ADMIN}))
    other = keys.create_key(db, "globex", frozenset({Scope.INGEST, Scope.READ}))
    revoked = keys.create_key(db, "acme", frozenset({Scope.INGEST}))
    (revoked_info,) = [k for k in keys.list_keys(db, "acme") if revoked.startswith(f"fbl_{k.id}_")]
    assert keys.revoke_key(db, revoked_info.id)

    server = make_server(database_url=store_url, allow_anonymous_loopback=False)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    record_request = ingestion_pb2.RecordInteractionRequest(
        interaction=S.Interaction(session_id="s-auth", turn_index=0, response="hi")
    )
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    denied = grpc.StatusCode.PERMISSION_DENIED

    expect_error(
        lambda: stub.RecordInteraction(record_request),
        unauthenticated,
        "missing API key: send 'authorization: Bearer <key>' metadata",
    )
    expect_error(
        lambda: stub.RecordInteraction(record_request, metadata=bearer("fbl_000000000000_nope")),
        unauthenticated,
        "invalid or revoked API key",
    )
    expect_error(
        lambda: stub.RecordInteraction(record_request, metadata=(("authorization", f"Basic {ingest}"),)),
        unauthenticated,
        "authorization metadata must be 'Bearer <key>'",
    )
    expect_error(
        lambda: stub.RecordInteraction(record_request, metadata=bearer(revoked)),
        unauthenticated,
        "invalid or revoked API key",
    )
    assert counts(server.app.db).interactions == 0

    # An ingest key records and submits in its own project.
    interaction_id = stub.RecordInteraction(record_request, metadata=bearer(ingest)).interaction_id
    ack = submit(stub, metadata=bearer(ingest), interaction_id=interaction_id, thumb=S.THUMB_UP)
    assert submit(stub, metadata=bearer(ingest), project="acme", session_id="s-auth", comment="ok").created
    expect_error(
        lambda: submit(stub, metadata=bearer(ingest), project="globex", session_id="s-auth", comment="x"),
        denied,
        "project: this API key belongs to project 'acme', not 'globex'",
    )
    # ...but cannot read.
    expect_error(
        lambda: stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(), metadata=bearer(ingest)),
        denied,
        "this API key lacks the 'read' scope",
    )
    expect_error(
        lambda: stub.GetFeedback(
            ingestion_pb2.GetFeedbackRequest(feedback_id=ack.feedback_id), metadata=bearer(ingest)
        ),
        denied,
        "this API key lacks the 'read' scope",
    )
    # A read key reads and cannot write.
    listed = stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(), metadata=bearer(read))
    assert len(listed.feedback) == 2
    for call in (
        lambda: submit(stub, metadata=bearer(read), interaction_id=interaction_id, thumb=S.THUMB_UP),
        lambda: stub.RecordInteraction(record_request, metadata=bearer(read)),
        lambda: stub.SubmitFeedbackStream(iter([]), metadata=bearer(read)),
    ):
        expect_error(call, denied, "this API key lacks the 'ingest' scope")
    # An admin key does both.
    assert submit(stub, metadata=bearer(admin), interaction_id=interaction_id, rating=4).created
    assert len(stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(), metadata=bearer(admin)).feedback) == 3
    # Another project's key sees none of acme's data.
    expect_error(
        lambda: stub.GetFeedback(
            ingestion_pb2.GetFeedbackRequest(feedback_id=ack.feedback_id), metadata=bearer(other)
        ),
        grpc.StatusCode.NOT_FOUND,
        f"feedback_id: no feedback '{ack.feedback_id}' in this project",
    )
    assert list(stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(), metadata=bearer(other)).feedback) == []
    expect_error(
        lambda: submit(stub, metadata=bearer(other), interaction_id=interaction_id, thumb=S.THUMB_UP),
        grpc.StatusCode.NOT_FOUND,
        f"feedback.interaction_id: no interaction '{interaction_id}' in this project",
    )
    assert counts(server.app.db).feedback == 3

    # Health and reflection need no key.
    health = health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    (answer,) = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    services = {s.name for s in answer.list_services_response.service}
    assert {"feedbackloop.v1.IngestionService", "grpc.health.v1.Health"} <= services


def test_a_key_revoked_before_start_is_refused(make_server, store_url, db) -> None:  # type: ignore[no-untyped-def]
    key = keys.create_key(db, "acme", frozenset({Scope.READ}))
    keys.create_key(db, "acme", frozenset({Scope.INGEST}))  # keeps the server startable
    first = make_server(database_url=store_url, allow_anonymous_loopback=False)
    stub = first.stub(ingestion_pb2_grpc.IngestionServiceStub)
    assert list(stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(), metadata=bearer(key)).feedback) == []
    (info,) = [k for k in keys.list_keys(db, "acme") if key.startswith(f"fbl_{k.id}_")]
    assert keys.revoke_key(db, info.id)
    assert not keys.revoke_key(db, info.id)
    second = make_server(database_url=store_url, allow_anonymous_loopback=False)
    expect_error(
        lambda: second.stub(ingestion_pb2_grpc.IngestionServiceStub).ListFeedback(
            ingestion_pb2.ListFeedbackRequest(), metadata=bearer(key)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid or revoked API key",
    )


@pytest.mark.parametrize(
    ("host", "anonymous"),
    [("0.0.0.0", True), ("0.0.0.0", False), ("127.0.0.1", False)],
)
def test_no_keys_and_no_anonymous_access_refuses_to_start(tmp_path, host, anonymous) -> None:  # type: ignore[no-untyped-def]
    # Only the refusal is tested: the server never binds a non-loopback address here.
    app = App(
        Settings(
            host=host,
            port=0,
            data_dir=tmp_path,
            pipeline_enabled=False,
            policies_dir=None,
            allow_anonymous_loopback=anonymous,
        )
    )
    try:
        with pytest.raises(StartupError) as raised:
            app.start()
        assert str(raised.value) == (
            f"refusing to serve on {host} without authentication: no API key exists. "
            "Create one with `feedbackloop keys create --project P --scope ingest` first."
        )
        assert app.server is None
    finally:
        app.db.dispose()


def test_cli_creates_a_key_that_works(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [
            *(sys.executable, "-m", "feedbackloop.cli", "keys", "create", "--project", "cli-proj"),
            *("--scope", "ingest", "--scope", "read", "--database-url", store_url),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "FEEDBACKLOOP_DATABASE_URL": ""},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # the key, once, and nothing else on stdout
    key = lines[0]
    assert re.fullmatch(r"fbl_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key), key
    assert "project cli-proj, scopes ingest read. This key is shown once" in result.stderr
    assert key not in result.stderr

    server = make_server(database_url=store_url, allow_anonymous_loopback=False)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    recorded = stub.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=S.Interaction(session_id="s-cli", turn_index=0, response="hi")
        ),
        metadata=bearer(key),
    )
    ack = submit(stub, metadata=bearer(key), interaction_id=recorded.interaction_id, thumb=S.THUMB_UP)
    got = stub.GetFeedback(
        ingestion_pb2.GetFeedbackRequest(feedback_id=ack.feedback_id), metadata=bearer(key)
    )
    assert got.feedback.session_id == "s-cli"
    # The key acts in its own project.
    expect_error(
        lambda: stub.GetSession(
            ingestion_pb2.GetSessionRequest(project="default", session_id="s-cli"), metadata=bearer(key)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "project: this API key belongs to project 'cli-proj', not 'default'",
    )
