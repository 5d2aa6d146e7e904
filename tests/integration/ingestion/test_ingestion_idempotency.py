"""Idempotent retries, conflicting replays, races on one key, and many concurrent writers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from ingestion_support import counts, feedback_ids, job_feedback_ids, record, submit

from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from support import code_of

S = common_pb2


def test_same_key_same_payload_returns_the_same_id(server, stub) -> None:  # type: ignore[no-untyped-def]
    interaction_id = record(stub, "s-idem")
    fields = {"interaction_id": interaction_id, "thumb": S.THUMB_DOWN, "idempotency_key": "k-1"}
    first = submit(stub, **fields)
    second = submit(stub, **fields)
    third = submit(stub, **fields)
    assert first.created is True
    assert (second.feedback_id, second.created) == (first.feedback_id, False)
    assert (third.feedback_id, third.created) == (first.feedback_id, False)
    assert counts(server.app.db).feedback == 1
    assert job_feedback_ids(server.app.db) == [first.feedback_id]
    # The same key in another request shape is still one event; a different key is a new one.
    other = submit(stub, interaction_id=interaction_id, thumb=S.THUMB_DOWN, idempotency_key="k-2")
    assert other.created and other.feedback_id != first.feedback_id
    assert counts(server.app.db).jobs == 2


def test_same_key_different_payload_is_refused(server, stub) -> None:  # type: ignore[no-untyped-def]
    interaction_id = record(stub, "s-idem")
    first = submit(stub, interaction_id=interaction_id, thumb=S.THUMB_DOWN, idempotency_key="k-1")
    before = counts(server.app.db)
    assert code_of(
        lambda: submit(stub, interaction_id=interaction_id, thumb=S.THUMB_UP, idempotency_key="k-1")
    ) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"feedback.idempotency_key: 'k-1' was already used for {first.feedback_id} with a different payload",
    )
    assert counts(server.app.db) == before
    stored = stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=first.feedback_id)).feedback
    assert stored.thumb == S.THUMB_DOWN


def test_record_interaction_replay_and_conflict(server, stub) -> None:  # type: ignore[no-untyped-def]
    interaction = S.Interaction(session_id="s-rec", turn_index=0, response="hello", attributes={"a": "1"})
    first = stub.RecordInteraction(ingestion_pb2.RecordInteractionRequest(interaction=interaction))
    again = stub.RecordInteraction(ingestion_pb2.RecordInteractionRequest(interaction=interaction))
    assert first.created is True
    assert (again.interaction_id, again.created) == (first.interaction_id, False)
    changed = S.Interaction(session_id="s-rec", turn_index=0, response="hello!", attributes={"a": "1"})
    assert code_of(
        lambda: stub.RecordInteraction(ingestion_pb2.RecordInteractionRequest(interaction=changed))
    ) == (
        grpc.StatusCode.ALREADY_EXISTS,
        f"interaction.turn_index: session 's-rec' already has turn 0 ({first.interaction_id}) "
        "with a different payload",
    )
    assert counts(server.app.db).interactions == 1


def _race(n: int, call: Any) -> list[Any]:
    barrier = threading.Barrier(n)

    def one(_: int) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def test_racing_submissions_of_one_key_store_one_event(server, stub) -> None:  # type: ignore[no-untyped-def]
    interaction_id = record(stub, "s-race")
    channels = [grpc.insecure_channel(server.address) for _ in range(16)]
    stubs = iter([ingestion_pb2_grpc.IngestionServiceStub(c) for c in channels])
    lock = threading.Lock()

    def call() -> Any:
        with lock:
            own = next(stubs)
        return submit(own, interaction_id=interaction_id, rating=3, idempotency_key="race-key")

    try:
        acks = _race(16, call)
    finally:
        for channel in channels:
            channel.close()
    assert len({a.feedback_id for a in acks}) == 1
    assert sorted(a.created for a in acks) == [False] * 15 + [True]
    assert feedback_ids(server.app.db) == [acks[0].feedback_id]
    assert job_feedback_ids(server.app.db) == [acks[0].feedback_id]


def test_racing_record_interaction_stores_one_turn(server, stub) -> None:  # type: ignore[no-untyped-def]
    request = ingestion_pb2.RecordInteractionRequest(
        interaction=S.Interaction(session_id="s-race", turn_index=4, response="same")
    )
    acks = _race(16, lambda: stub.RecordInteraction(request))
    assert len({a.interaction_id for a in acks}) == 1
    assert sorted(a.created for a in acks) == [False] * 15 + [True]
    assert counts(server.app.db).interactions == 1


def test_concurrent_writers_lose_nothing(server, stub) -> None:  # type: ignore[no-untyped-def]
    interaction_id = record(stub, "s-load")
    threads, per_thread = 16, 50

    def writer(worker: int) -> list[str]:
        channel = grpc.insecure_channel(server.address)
        own = ingestion_pb2_grpc.IngestionServiceStub(channel)
        try:
            return [
                submit(
                    own,
                    interaction_id=interaction_id,
                    rating=1 + i % 5,
                    idempotency_key=f"w{worker}-{i}",
                ).feedback_id
                for i in range(per_thread)
            ]
        finally:
            channel.close()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        acked = [fid for ids in pool.map(writer, range(threads)) for fid in ids]
    assert len(acked) == len(set(acked)) == threads * per_thread
    stored = feedback_ids(server.app.db)
    jobs = job_feedback_ids(server.app.db)
    assert len(stored) == len(jobs) == threads * per_thread
    assert set(stored) == set(jobs) == set(acked)
