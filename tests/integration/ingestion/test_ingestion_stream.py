"""SubmitFeedbackStream: one ack per event in order, per-event errors, batching, replays."""

from __future__ import annotations

from typing import Any

from ingestion_support import counts, feedback_ids, job_feedback_ids, record, submit

from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc

S = common_pb2
EVENTS = 100
BATCH = 16


def _event(i: int, interaction_id: str) -> tuple[S.Feedback, tuple[str, str, list[tuple[str, str]]] | None]:
    """Event i and the error it must get (code, message, violations), or None when valid."""
    if i % 10 == 3:
        return S.Feedback(interaction_id=interaction_id, rating=9, idempotency_key=f"e-{i}"), (
            "INVALID_ARGUMENT",
            "feedback.rating: must be between 1 and 5 (got 9)",
            [("feedback.rating", "must be between 1 and 5 (got 9)")],
        )
    if i % 10 == 7:
        # Valid on its face; refused by the store inside the batch.
        return S.Feedback(interaction_id="int_missing", thumb=S.THUMB_UP, idempotency_key=f"e-{i}"), (
            "NOT_FOUND",
            "feedback.interaction_id: no interaction 'int_missing' in this project",
            [("feedback.interaction_id", "no interaction 'int_missing' in this project")],
        )
    if i == 55:
        return S.Feedback(interaction_id=interaction_id, idempotency_key=f"e-{i}"), (
            "INVALID_ARGUMENT",
            "feedback: carries no signal: set at least one of thumb, rating, categories, comment, "
            "correction, implicit_signal",
            [
                (
                    "feedback",
                    "carries no signal: set at least one of thumb, rating, categories, comment, "
                    "correction, implicit_signal",
                )
            ],
        )
    return S.Feedback(interaction_id=interaction_id, rating=1 + i % 5, idempotency_key=f"e-{i}"), None


def _stream(stub: Any, messages: list[S.Feedback]) -> Any:
    return stub.SubmitFeedbackStream(
        iter([ingestion_pb2.SubmitFeedbackStreamRequest(feedback=m) for m in messages])
    )


def test_stream_acks_every_event_in_order(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url, stream_batch_size=BATCH)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    interaction_id = record(stub, "s-stream")
    events = [_event(i, interaction_id) for i in range(EVENTS)]
    response = _stream(stub, [m for m, _ in events])

    assert [a.index for a in response.acks] == list(range(EVENTS))
    stored: list[str] = []
    for ack, (_, error) in zip(response.acks, events, strict=True):
        if error is None:
            assert ack.feedback_id.startswith("fb_") and ack.created, ack
            assert not ack.HasField("error"), ack
            stored.append(ack.feedback_id)
        else:
            assert ack.feedback_id == "" and not ack.created, ack
            got = (
                ack.error.code,
                ack.error.message,
                [(v.field, v.description) for v in ack.error.field_violations],
            )
            assert got == error, ack.index
    expected_rejected = sum(1 for _, e in events if e is not None)
    assert (response.accepted, response.rejected) == (EVENTS - expected_rejected, expected_rejected)
    assert len(set(stored)) == len(stored) == EVENTS - expected_rejected
    assert sorted(feedback_ids(server.app.db)) == sorted(stored)
    assert sorted(job_feedback_ids(server.app.db)) == sorted(stored)
    # Stored with what was sent, in the right slot.
    for index in (0, 11, 99):
        got = stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=response.acks[index].feedback_id))
        assert got.feedback.idempotency_key == f"e-{index}"
        assert got.feedback.rating == 1 + index % 5

    # Replaying the whole stream returns the same ids, created=false, and stores nothing new.
    before = counts(server.app.db)
    replay = _stream(stub, [m for m, _ in events])
    assert [a.feedback_id for a in replay.acks] == [a.feedback_id for a in response.acks]
    assert not any(a.created for a in replay.acks)
    assert (replay.accepted, replay.rejected) == (response.accepted, response.rejected)
    assert counts(server.app.db) == before


def test_stream_dedupes_keys_within_the_stream_and_against_unary(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url, stream_batch_size=4)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    interaction_id = record(stub, "s-dup")
    unary = submit(stub, interaction_id=interaction_id, thumb=S.THUMB_UP, idempotency_key="u-1")
    same = S.Feedback(interaction_id=interaction_id, thumb=S.THUMB_DOWN, idempotency_key="dup")
    response = _stream(
        stub,
        [
            same,  # 0: new
            same,  # 1: same batch, same key and payload -> replay of 0
            S.Feedback(interaction_id=interaction_id, thumb=S.THUMB_UP, idempotency_key="dup"),  # 2: conflict
            S.Feedback(interaction_id=interaction_id, thumb=S.THUMB_UP, idempotency_key="u-1"),  # 3: unary's
            S.Feedback(interaction_id=interaction_id, comment="later batch"),  # 4: no key, new
            same,  # 5: a later batch, replay of 0
        ],
    )
    acks = response.acks
    assert acks[0].created and acks[0].feedback_id
    assert (acks[1].feedback_id, acks[1].created) == (acks[0].feedback_id, False)
    assert acks[2].feedback_id == ""
    assert (acks[2].error.code, acks[2].error.message) == (
        "FAILED_PRECONDITION",
        f"feedback.idempotency_key: 'dup' was already used for {acks[0].feedback_id} with a different payload",
    )
    assert (acks[3].feedback_id, acks[3].created) == (unary.feedback_id, False)
    assert acks[4].created
    assert (acks[5].feedback_id, acks[5].created) == (acks[0].feedback_id, False)
    assert (response.accepted, response.rejected) == (5, 1)
    assert counts(server.app.db).feedback == counts(server.app.db).jobs == 3


def test_empty_stream(stub) -> None:  # type: ignore[no-untyped-def]
    response = _stream(stub, [])
    assert list(response.acks) == []
    assert (response.accepted, response.rejected) == (0, 0)
