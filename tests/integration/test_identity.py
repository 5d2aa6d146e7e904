"""IdentityService.WhoAmI: any valid key learns its project, id, scopes and reviewer identity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.v1 import identity_pb2, identity_pb2_grpc
from support import bearer, expect_error


def _who(server: Any, key: str | None) -> identity_pb2.WhoAmIResponse:
    stub = server.stub(identity_pb2_grpc.IdentityServiceStub)
    return stub.WhoAmI(identity_pb2.WhoAmIRequest(), metadata=bearer(key) if key else None, timeout=10)


@pytest.fixture
def keyed(make_server: Callable[..., Any], store_url: str, db: Any) -> Any:
    """A server that takes no keyless requests (it refuses to start without a key)."""
    keys.create_key(db, "shop", frozenset({Scope.INGEST}), description="bootstrap")
    return make_server(database_url=store_url, allow_anonymous_loopback=False, wait_ready=False)


def test_every_valid_key_may_ask_who_it_is(keyed: Any) -> None:
    db = keyed.app.db
    ingest = keys.create_key(db, "shop", frozenset({Scope.INGEST}))
    reviewer = keys.create_key(db, "shop", frozenset({Scope.REVIEW, Scope.READ}), reviewer="alice")
    admin = keys.create_key(db, "ops", frozenset({Scope.ADMIN}))
    answers = {key: _who(keyed, key) for key in (ingest, reviewer, admin)}
    ingest_id, admin_id = ingest.split("_")[1], admin.split("_")[1]
    assert [(a.project, a.key_id, list(a.scopes), a.reviewer) for a in answers.values()] == [
        ("shop", ingest_id, ["ingest"], f"key:{ingest_id}"),
        ("shop", reviewer.split("_")[1], ["read", "review"], "alice"),
        ("ops", admin_id, ["admin"], f"key:{admin_id}"),
    ]


def test_no_key_or_a_revoked_one_is_unauthenticated(keyed: Any) -> None:
    key = keys.create_key(keyed.app.db, "shop", frozenset({Scope.READ}))
    expect_error(
        lambda: _who(keyed, None),
        grpc.StatusCode.UNAUTHENTICATED,
        "missing API key: send 'authorization: Bearer <key>' metadata",
    )
    keys.revoke_key(keyed.app.db, key.split("_")[1])
    expect_error(lambda: _who(keyed, key), grpc.StatusCode.UNAUTHENTICATED, "invalid or revoked API key")


def test_the_keyless_loopback_default_is_anonymous_with_every_scope(server: Any) -> None:
    answer = _who(server, None)
    assert (answer.project, answer.key_id, answer.reviewer) == ("default", "anonymous", "key:anonymous")
    assert set(answer.scopes) == {s.value for s in Scope}
