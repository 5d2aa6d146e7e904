"""Bytes that are not the request message: INVALID_ARGUMENT naming the field, nothing stored.

Sent with raw channels (identity serializers), as a broken or hostile client would. On a
client stream, the first undecodable message fails the RPC naming its position; the batch in
progress is not committed, and the status details carry one ack per earlier event.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from ingestion_support import bad_request, counts, feedback_ids, record

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from support import bearer, code_of

S = common_pb2
SUBMIT = "/feedbackloop.v1.IngestionService/SubmitFeedback"
STREAM = "/feedbackloop.v1.IngestionService/SubmitFeedbackStream"
MARK = "\u00e9\u00e9"


def corrupted(message: Any) -> bytes:
    """`message` serialized with the string holding MARK made invalid UTF-8."""
    data: bytes = message.SerializeToString()
    assert data.count(MARK.encode()) == 1
    return data.replace(MARK.encode(), b"\xff\xfe\xff\xfe")


def event(key: str, **fields: Any) -> bytes:
    feedback = S.Feedback(session_id="s-bytes", thumb=S.THUMB_DOWN, idempotency_key=key, **fields)
    return ingestion_pb2.SubmitFeedbackStreamRequest(feedback=feedback).SerializeToString()


def bad_event(key: str) -> bytes:
    return corrupted(
        ingestion_pb2.SubmitFeedbackStreamRequest(
            feedback=S.Feedback(session_id="s-bytes", thumb=S.THUMB_DOWN, idempotency_key=key, comment=MARK)
        )
    )


def raw_stream(channel: grpc.Channel, messages: list[bytes], metadata: Any = None) -> Any:
    call = channel.stream_unary(
        STREAM, response_deserializer=ingestion_pb2.SubmitFeedbackStreamResponse.FromString
    )
    return call(iter(messages), timeout=10, metadata=metadata)


def stream_details(error: grpc.RpcError) -> ingestion_pb2.SubmitFeedbackStreamResponse:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    (packed,) = [d for d in status.details if d.Is(ingestion_pb2.SubmitFeedbackStreamResponse.DESCRIPTOR)]
    partial = ingestion_pb2.SubmitFeedbackStreamResponse()
    packed.Unpack(partial)
    return partial


def wire_size(metadata: Any) -> int:
    """Bytes `metadata` takes on the wire: binary values travel base64-encoded."""
    return sum(len(k) + ((len(v) + 2) // 3 * 4 if k.endswith("-bin") else len(v)) for k, v in metadata)


def grpc_error_logs(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.name.startswith("grpc") or r.exc_info]


def test_invalid_utf8_in_a_unary_request_names_the_field(
    server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    call = server.channel.unary_unary(
        SUBMIT, response_deserializer=ingestion_pb2.SubmitFeedbackResponse.FromString
    )
    data = corrupted(
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=S.Feedback(session_id="s", thumb=S.THUMB_UP, comment=MARK)
        )
    )
    before = counts(server.app.db)
    with caplog.at_level(logging.INFO):
        try:
            call(data, timeout=10)
            raise AssertionError("accepted")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            description = "is not valid UTF-8 at byte 0; the request is not a valid feedbackloop.v1.SubmitFeedbackRequest"
            assert error.details() == f"feedback.comment: {description}"  # type: ignore[attr-defined]
            assert bad_request(error) == [("feedback.comment", description)]
    assert counts(server.app.db) == before
    assert grpc_error_logs(caplog.records) == []


def test_random_bytes_to_the_health_check_are_refused_and_it_keeps_serving(server: Any) -> None:
    call = server.channel.unary_unary(
        "/grpc.health.v1.Health/Check", response_deserializer=health_pb2.HealthCheckResponse.FromString
    )
    assert code_of(lambda: call(b"\x0a\x05ab", timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "service: is truncated (its length runs past the end of the message); "
        "the request is not a valid grpc.health.v1.HealthCheckRequest",
    )
    health = health_pb2_grpc.HealthStub(server.channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_without_a_key_bad_bytes_are_unauthenticated_first(make_server: Any, store_url: str, db: Any) -> None:
    key = keys.create_key(db, "acme", frozenset({Scope.INGEST}))
    server = make_server(database_url=store_url, allow_anonymous_loopback=False)
    assert code_of(lambda: raw_stream(server.channel, [bad_event("k")])) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "missing API key: send 'authorization: Bearer <key>' metadata",
    )
    code, _ = code_of(lambda: raw_stream(server.channel, [bad_event("k")], metadata=bearer(key)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_an_undecodable_stream_message_fails_the_stream_and_stores_nothing_of_its_batch(
    make_server: Any, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(database_url=store_url, stream_batch_size=2)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    record(stub, "s-bytes")
    refused = ingestion_pb2.SubmitFeedbackStreamRequest(
        feedback=S.Feedback(session_id="s-bytes", rating=9, idempotency_key="k2")
    ).SerializeToString()
    # 0 and 1 fill a batch, which is committed; 2 is refused; 3 waits in the next batch when 4
    # fails to decode; 5 is never read.
    messages = [event("k0"), event("k1"), refused, event("k3"), bad_event("k4"), event("k5")]
    with caplog.at_level(logging.INFO):
        try:
            raw_stream(server.channel, messages)
            raise AssertionError("accepted")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            description = (
                "is not valid UTF-8 at byte 0; "
                "stream message 4 is not a valid feedbackloop.v1.SubmitFeedbackStreamRequest"
            )
            assert error.details() == (  # type: ignore[attr-defined]
                f"stream[4].feedback.comment: {description}; the events before it: 2 stored, 1 not "
                "stored (their batch was not committed), 1 refused (the status details hold one ack per event)"
            )
            assert bad_request(error) == [("stream[4].feedback.comment", description)]
            partial = stream_details(error)
    assert grpc_error_logs(caplog.records) == []
    assert [a.index for a in partial.acks] == [0, 1, 2, 3]
    assert (partial.accepted, partial.rejected) == (2, 2)
    stored = [a.feedback_id for a in partial.acks[:2]]
    assert all(a.created for a in partial.acks[:2]) and all(stored)
    assert partial.acks[2].error.code == "INVALID_ARGUMENT"
    assert partial.acks[3].error.code == "ABORTED" and not partial.acks[3].feedback_id
    assert partial.acks[3].error.message == "not stored: its batch was not committed; send it again"
    # Exactly the acked events are stored: an ack means committed, and nothing else came in.
    assert sorted(feedback_ids(server.app.db)) == sorted(stored)

    # Resending the corrected stream is safe: the stored events replay, the others are created.
    fixed = [event("k0"), event("k1"), refused, event("k3"), event("k4"), event("k5")]
    response = raw_stream(server.channel, fixed)
    assert [a.feedback_id for a in response.acks[:2]] == stored
    assert [a.created for a in response.acks] == [False, False, False, True, True, True]
    assert len(feedback_ids(server.app.db)) == 5


def test_a_long_stream_failing_late_still_answers_within_the_trailer_limit(
    make_server: Any, store_url: str
) -> None:
    """The acks ride in the trailers, which clients cap at 16 KB: 600 acks (about 25 KB) made
    the client see RESOURCE_EXHAUSTED with no acks at all, not knowing what was stored."""
    server = make_server(database_url=store_url, stream_batch_size=100)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    record(stub, "s-bytes")
    messages = [event(f"k{i}") for i in range(650)] + [bad_event("bad")]
    try:
        raw_stream(server.channel, messages)
        raise AssertionError("accepted")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        trailers = error.trailing_metadata()  # type: ignore[attr-defined]
        assert wire_size(trailers) < 8192  # the clients' soft limit
        assert error.details().endswith(  # type: ignore[attr-defined]
            "the events before it: 600 stored, 50 not stored (their batch was not committed), 0 refused "
            f"(the status details hold the acks of the first {len(stream_details(error).acks)}; "
            "the batch not committed began at event 600)"
        )
        partial = stream_details(error)
    assert (partial.accepted, partial.rejected) == (600, 50)
    assert 0 < len(partial.acks) < 600
    assert [a.index for a in partial.acks] == list(range(len(partial.acks)))
    assert set(a.feedback_id for a in partial.acks) <= set(feedback_ids(server.app.db))
    assert len(feedback_ids(server.app.db)) == 600


def test_a_stream_failing_in_its_first_batch_changes_nothing(server: Any) -> None:
    before = counts(server.app.db)
    for messages, position in (
        ([bad_event("a"), event("b")], 0),
        ([event("a"), bad_event("b"), event("c")], 1),
    ):
        code, details = code_of(lambda m=messages: raw_stream(server.channel, m))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith(f"stream[{position}].feedback.comment: is not valid UTF-8")
    assert counts(server.app.db) == before


def test_stop_completes_after_undecodable_streams(make_server: Any, store_url: str) -> None:
    """gRPC's own refusal of an undecodable stream message raced the servicer's reply, and the
    loser left a call that never completed: `stop` then waited forever."""
    server = make_server(database_url=store_url)
    for _ in range(20):
        code, _ = code_of(lambda: raw_stream(server.channel, [bad_event("x"), event("y")]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    done = threading.Event()
    started = time.monotonic()
    threading.Thread(target=lambda: (server.app.stop(grace=1.0), done.set()), daemon=True).start()
    assert done.wait(10), "stop did not return"
    assert time.monotonic() - started < 1.0 + 3.0 + 0.5
