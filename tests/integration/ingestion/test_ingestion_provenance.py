"""Only the review path writes REVIEWER feedback, and EVALUATOR needs the `evaluate` scope."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from ingestion_support import bad_request, counts, record, submit
from sqlalchemy import select

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.store.db import Database
from feedbackloop.store.models import Feedback
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from support import bearer, code_of, expect_error

S = common_pb2
REVIEWER_REFUSED = (
    "feedback.source: FEEDBACK_SOURCE_REVIEWER is recorded only by ReviewService.ResolveReviewItem"
)
EVALUATOR_DENIED = "feedback.source: FEEDBACK_SOURCE_EVALUATOR needs the 'evaluate' scope"


@pytest.fixture
def keyed(make_server: Any, store_url: str, db: Database) -> tuple[Any, dict[str, str]]:
    """A server that requires keys, and a key per scope set."""
    made = {
        "ingest": keys.create_key(db, "acme", frozenset({Scope.INGEST})),
        "evaluator": keys.create_key(db, "acme", frozenset({Scope.INGEST, Scope.EVALUATE})),
        "admin": keys.create_key(db, "acme", frozenset({Scope.ADMIN})),
    }
    server = make_server(database_url=store_url, allow_anonymous_loopback=False)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    stub.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(interaction=S.Interaction(session_id="s", response="hi")),
        metadata=bearer(made["ingest"]),
    )
    return stub, made


def _sources(db: Database) -> list[str]:
    with db.read() as session:
        return sorted(session.scalars(select(Feedback.source)))


def _stream(stub: Any, key: str, sources: list[int]) -> ingestion_pb2.SubmitFeedbackStreamResponse:
    return stub.SubmitFeedbackStream(
        iter(
            ingestion_pb2.SubmitFeedbackStreamRequest(
                feedback=S.Feedback(session_id="s", thumb=S.THUMB_DOWN, source=source)
            )
            for source in sources
        ),
        metadata=bearer(key),
    )


@pytest.mark.parametrize("who", ["ingest", "evaluator", "admin"])
def test_no_key_submits_reviewer_feedback(keyed: tuple[Any, dict[str, str]], db: Database, who: str) -> None:
    stub, made = keyed
    call = lambda: submit(  # noqa: E731
        stub, metadata=bearer(made[who]), session_id="s", thumb=S.THUMB_UP, source=S.FEEDBACK_SOURCE_REVIEWER
    )
    try:
        call()
    except grpc.RpcError as error:
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, REVIEWER_REFUSED)  # type: ignore[attr-defined]
        assert bad_request(error) == [
            (
                "feedback.source",
                "FEEDBACK_SOURCE_REVIEWER is recorded only by ReviewService.ResolveReviewItem",
            )
        ]
    else:
        raise AssertionError("REVIEWER feedback was accepted")
    assert counts(db).feedback == 0 and counts(db).jobs == 0


def test_the_anonymous_loopback_principal_submits_no_reviewer_feedback(server: Any, db: Database) -> None:
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    record(stub, "s")
    expect_error(
        lambda: submit(stub, session_id="s", thumb=S.THUMB_UP, source=S.FEEDBACK_SOURCE_REVIEWER),
        grpc.StatusCode.INVALID_ARGUMENT,
        REVIEWER_REFUSED,
    )
    assert counts(db).feedback == 0


def test_evaluator_feedback_needs_the_evaluate_scope(keyed: tuple[Any, dict[str, str]], db: Database) -> None:
    stub, made = keyed

    def evaluate(who: str) -> Any:
        return submit(
            stub, metadata=bearer(made[who]), session_id="s", rating=2, source=S.FEEDBACK_SOURCE_EVALUATOR
        )

    expect_error(lambda: evaluate("ingest"), grpc.StatusCode.PERMISSION_DENIED, EVALUATOR_DENIED)
    assert counts(db).feedback == 0
    assert evaluate("evaluator").created and evaluate("admin").created
    # An ingest key still submits what end users said, with or without naming the source.
    submit(stub, metadata=bearer(made["ingest"]), session_id="s", thumb=S.THUMB_UP)
    submit(
        stub,
        metadata=bearer(made["ingest"]),
        session_id="s",
        thumb=S.THUMB_UP,
        source=S.FEEDBACK_SOURCE_END_USER,
    )
    assert _sources(db) == ["end_user", "end_user", "evaluator", "evaluator"]


def test_the_stream_refuses_per_event(keyed: tuple[Any, dict[str, str]], db: Database) -> None:
    stub, made = keyed
    order = [S.FEEDBACK_SOURCE_END_USER, S.FEEDBACK_SOURCE_REVIEWER, S.FEEDBACK_SOURCE_EVALUATOR]
    response = _stream(stub, made["ingest"], order)
    assert (response.accepted, response.rejected) == (1, 2)
    ok, reviewer, evaluator = response.acks
    assert ok.feedback_id and not ok.HasField("error")
    assert (reviewer.error.code, reviewer.error.message) == ("INVALID_ARGUMENT", REVIEWER_REFUSED)
    assert [(v.field, v.description) for v in reviewer.error.field_violations] == [
        ("feedback.source", "FEEDBACK_SOURCE_REVIEWER is recorded only by ReviewService.ResolveReviewItem")
    ]
    assert (evaluator.error.code, evaluator.error.message) == ("PERMISSION_DENIED", EVALUATOR_DENIED)
    assert _sources(db) == ["end_user"]

    response = _stream(stub, made["evaluator"], order)
    assert [bool(a.feedback_id) for a in response.acks] == [True, False, True]
    assert _sources(db) == ["end_user", "end_user", "evaluator"]
    assert (
        code_of(lambda: _stream(stub, "fbl_000000000000_nope", order))[0] == grpc.StatusCode.UNAUTHENTICATED
    )
