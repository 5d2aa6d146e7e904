"""Presigned feedback tokens against real servers: one interaction, SubmitFeedback only, until
expiry or until the key that minted them is revoked; accepted by every replica."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from feedbackloop import auth
from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.store.models import Feedback, FeedbackToken
from feedbackloop.v1 import common_pb2, identity_pb2, identity_pb2_grpc, ingestion_pb2, ingestion_pb2_grpc
from support import bearer, expect_error

DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
ONLY_SUBMIT = "a feedback token may only call IngestionService/SubmitFeedback, not feedbackloop.v1.{}"


class Shop:
    """A server that requires keys, an application key of project `shop`, and two turns."""

    def __init__(self, server: Any, app_key: str) -> None:
        self.server = server
        self.app_key = app_key
        self.stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
        self.turns = [self.record(turn) for turn in (0, 1)]

    def record(self, turn: int, session: str = "s-shop") -> str:
        return self.stub.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(
                    session_id=session, turn_index=turn, response=f"answer {turn}"
                )
            ),
            metadata=bearer(self.app_key),
        ).interaction_id

    def mint(
        self, interaction_id: str, ttl: int = 0, key: str | None = None
    ) -> ingestion_pb2.CreateFeedbackTokenResponse:
        return self.stub.CreateFeedbackToken(
            ingestion_pb2.CreateFeedbackTokenRequest(interaction_id=interaction_id, ttl_seconds=ttl),
            metadata=bearer(key or self.app_key),
        )

    def submit(self, token: str, interaction_id: str, stub: Any = None, **fields: Any) -> str:
        feedback = common_pb2.Feedback(interaction_id=interaction_id, thumb=common_pb2.THUMB_DOWN, **fields)
        return (
            (stub or self.stub)
            .SubmitFeedback(ingestion_pb2.SubmitFeedbackRequest(feedback=feedback), metadata=bearer(token))
            .feedback_id
        )


@pytest.fixture
def shop(make_server: Callable[..., Any], store_url: str, db: Any, embedder: Any) -> Shop:
    app_key = keys.create_key(db, "shop", frozenset({Scope.INGEST}))
    server = make_server(embedder=embedder, database_url=store_url, allow_anonymous_loopback=False)
    return Shop(server, app_key)


def test_a_token_submits_feedback_on_its_interaction_and_is_stored_hashed(shop: Shop) -> None:
    before = datetime.now(UTC)
    minted = shop.mint(shop.turns[0])
    assert minted.token.startswith("fbt_") and len(minted.token) > 40
    expires = minted.expires_at.ToDatetime(tzinfo=UTC)
    assert before + timedelta(seconds=3599) <= expires <= datetime.now(UTC) + timedelta(seconds=3601)
    feedback_id = shop.submit(minted.token, shop.turns[0], comment="wrong price")
    db = shop.server.app.db
    with db.read() as session:
        stored = session.get(Feedback, feedback_id)
        rows = list(session.scalars(select(FeedbackToken)))
    assert stored is not None and (stored.project_id, stored.interaction_id) == ("shop", shop.turns[0])
    assert stored.source == "end_user" and stored.comment == "wrong price"
    assert [(r.token_hash, r.interaction_id, r.key_id) for r in rows] == [
        (auth.hash_key(minted.token), shop.turns[0], shop.app_key.split("_")[1])
    ]


def test_a_token_is_refused_on_another_interaction_and_for_session_feedback(shop: Shop) -> None:
    token = shop.mint(shop.turns[0]).token
    only = (
        f"feedback.interaction_id: this feedback token submits feedback on interaction '{shop.turns[0]}' only"
    )
    expect_error(lambda: shop.submit(token, shop.turns[1]), DENIED, only)
    expect_error(
        lambda: shop.stub.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(
                feedback=common_pb2.Feedback(session_id="s-shop", thumb=common_pb2.THUMB_DOWN)
            ),
            metadata=bearer(token),
        ),
        DENIED,
        only,
    )
    # An evaluator's or a reviewer's voice is not the end user's to claim.
    expect_error(
        lambda: shop.submit(token, shop.turns[0], source=common_pb2.FEEDBACK_SOURCE_EVALUATOR),
        DENIED,
        "feedback.source: FEEDBACK_SOURCE_EVALUATOR needs the 'evaluate' scope",
    )
    expect_error(
        lambda: shop.stub.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(
                project="other", feedback=common_pb2.Feedback(interaction_id=shop.turns[0], thumb=1)
            ),
            metadata=bearer(token),
        ),
        DENIED,
        "project: this API key belongs to project 'shop', not 'other'",
    )
    with shop.server.app.db.read() as session:
        assert session.scalars(select(Feedback)).all() == []


def test_a_tokens_idempotency_keys_cannot_take_the_projects(shop: Shop) -> None:
    # A browser that knows (or guesses) a key the application or an evaluator will send later
    # must not make that later submission a conflict, nor answer it with its own feedback.
    token = shop.mint(shop.turns[0]).token
    key = f"otlp-eval:{'a' * 32}:{'b' * 16}:0"
    from_token = shop.submit(token, shop.turns[0], idempotency_key=key)
    response = shop.stub.SubmitFeedback(
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=common_pb2.Feedback(
                interaction_id=shop.turns[1], thumb=common_pb2.THUMB_UP, idempotency_key=key
            )
        ),
        metadata=bearer(shop.app_key),
    )
    assert response.created and response.feedback_id != from_token
    # The browser's retry still replays its own feedback.
    replay = shop.stub.SubmitFeedback(
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=common_pb2.Feedback(
                interaction_id=shop.turns[0], thumb=common_pb2.THUMB_DOWN, idempotency_key=key
            )
        ),
        metadata=bearer(token),
    )
    assert (replay.feedback_id, replay.created) == (from_token, False)
    with shop.server.app.db.read() as session:
        stored = session.get(Feedback, from_token)
    assert stored is not None and stored.idempotency_key is not None
    assert stored.idempotency_key.startswith(f"fbt:{shop.turns[0]}:") and key not in stored.idempotency_key


def test_a_token_calls_nothing_but_submit_feedback(shop: Shop) -> None:
    token = shop.mint(shop.turns[0]).token
    md = bearer(token)
    stub = shop.stub
    calls: dict[str, Callable[[], Any]] = {
        "IngestionService/GetSession": lambda: stub.GetSession(
            ingestion_pb2.GetSessionRequest(session_id="s-shop"), metadata=md
        ),
        "IngestionService/RecordInteraction": lambda: stub.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(session_id="s2", turn_index=0, response="x")
            ),
            metadata=md,
        ),
        "IngestionService/CreateFeedbackToken": lambda: stub.CreateFeedbackToken(
            ingestion_pb2.CreateFeedbackTokenRequest(interaction_id=shop.turns[1]), metadata=md
        ),
        "IngestionService/SubmitFeedbackStream": lambda: stub.SubmitFeedbackStream(
            iter(
                [
                    ingestion_pb2.SubmitFeedbackStreamRequest(
                        feedback=common_pb2.Feedback(interaction_id=shop.turns[0], thumb=1)
                    )
                ]
            ),
            metadata=md,
        ),
        "IdentityService/WhoAmI": lambda: shop.server.stub(identity_pb2_grpc.IdentityServiceStub).WhoAmI(
            identity_pb2.WhoAmIRequest(), metadata=md
        ),
    }
    for method, call in calls.items():
        expect_error(call, DENIED, ONLY_SUBMIT.format(method))


def test_expired_unknown_and_revoked_tokens_are_unauthenticated(shop: Shop) -> None:
    db = shop.server.app.db
    short = shop.mint(shop.turns[0], ttl=1).token
    shop.submit(short, shop.turns[0])
    time.sleep(1.2)
    expect_error(lambda: shop.submit(short, shop.turns[0]), UNAUTHENTICATED, "feedback token expired")
    expect_error(
        lambda: shop.submit("fbt_" + "x" * 43, shop.turns[0]), UNAUTHENTICATED, "invalid feedback token"
    )
    expect_error(
        lambda: shop.submit("fbt_" + "x" * 500, shop.turns[0]), UNAUTHENTICATED, "invalid feedback token"
    )

    # Revoking the key that minted a token ends the token; another key's tokens still work.
    second = keys.create_key(db, "shop", frozenset({Scope.INGEST}))
    from_first = shop.mint(shop.turns[0]).token
    from_second = shop.mint(shop.turns[0], key=second).token
    assert keys.revoke_key(db, shop.app_key.split("_")[1])
    expect_error(
        lambda: shop.submit(from_first, shop.turns[0]),
        UNAUTHENTICATED,
        "the API key that minted this feedback token was revoked",
    )
    shop.submit(from_second, shop.turns[0])


def test_minting_needs_ingest_an_interaction_of_the_project_and_a_valid_ttl(shop: Shop) -> None:
    db = shop.server.app.db
    reader = keys.create_key(db, "shop", frozenset({Scope.READ}))
    outsider = keys.create_key(db, "globex", frozenset({Scope.INGEST}))
    expect_error(
        lambda: shop.mint(shop.turns[0], key=reader), DENIED, "this API key lacks the 'ingest' scope"
    )
    expect_error(
        lambda: shop.mint(shop.turns[0], key=outsider),
        grpc.StatusCode.NOT_FOUND,
        f"interaction_id: no interaction '{shop.turns[0]}' in this project",
    )
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    expect_error(lambda: shop.mint(""), invalid, "interaction_id: is required")
    for ttl in (-1, 86401):
        expect_error(
            lambda t=ttl: shop.mint(shop.turns[0], ttl=t),  # type: ignore[misc]
            invalid,
            f"ttl_seconds: must be between 1 and 86400 seconds, or 0 for 3600 (got {ttl})",
        )
    longest = shop.mint(shop.turns[0], ttl=86400).expires_at.ToDatetime(tzinfo=UTC)
    assert longest > datetime.now(UTC) + timedelta(hours=23, minutes=59)
    with db.read() as session:
        assert len(session.scalars(select(FeedbackToken)).all()) == 1


def test_a_token_minted_by_one_replica_works_on_another(
    shop: Shop, make_server: Callable[..., Any], store_url: str, embedder: Any
) -> None:
    other = make_server(embedder=embedder, database_url=store_url, allow_anonymous_loopback=False)
    token = shop.mint(shop.turns[1]).token
    shop.submit(token, shop.turns[1], stub=other.stub(ingestion_pb2_grpc.IngestionServiceStub))


def test_tokens_expired_a_day_ago_are_removed_when_the_next_is_minted(shop: Shop) -> None:
    db = shop.server.app.db
    old, recent = shop.mint(shop.turns[0]).token, shop.mint(shop.turns[0]).token
    with db.write() as session:
        for token, age in ((old, timedelta(days=1, minutes=1)), (recent, timedelta(hours=1))):
            row = session.get(FeedbackToken, auth.hash_key(token))
            assert row is not None
            row.expires_at = datetime.now(UTC) - age
    shop.mint(shop.turns[1])
    with db.read() as session:
        kept = {row.token_hash for row in session.scalars(select(FeedbackToken))}
    assert auth.hash_key(old) not in kept and auth.hash_key(recent) in kept and len(kept) == 2
    expect_error(lambda: shop.submit(recent, shop.turns[0]), UNAUTHENTICATED, "feedback token expired")
    expect_error(lambda: shop.submit(old, shop.turns[0]), UNAUTHENTICATED, "invalid feedback token")


def test_a_keyless_loopback_token_works_only_where_keyless_requests_do(
    make_server: Callable[..., Any], store_url: str, db: Any, embedder: Any
) -> None:
    keyless = make_server(embedder=embedder, database_url=store_url)
    stub = keyless.stub(ingestion_pb2_grpc.IngestionServiceStub)
    turn = stub.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(session_id="s", turn_index=0, response="hi")
        )
    ).interaction_id
    token = stub.CreateFeedbackToken(ingestion_pb2.CreateFeedbackTokenRequest(interaction_id=turn)).token
    feedback = ingestion_pb2.SubmitFeedbackRequest(feedback=common_pb2.Feedback(interaction_id=turn, thumb=1))
    stub.SubmitFeedback(feedback, metadata=bearer(token))
    keys.create_key(db, "default", frozenset({Scope.INGEST}))
    keyed = make_server(embedder=embedder, database_url=store_url, allow_anonymous_loopback=False)
    expect_error(
        lambda: keyed.stub(ingestion_pb2_grpc.IngestionServiceStub).SubmitFeedback(
            feedback, metadata=bearer(token)
        ),
        UNAUTHENTICATED,
        "feedback token minted without an API key, and this server requires keys",
    )
