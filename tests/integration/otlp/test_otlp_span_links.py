"""Feedback naming a span that has not arrived: it waits, and when the wait ends it is kept
unlinked (the default) or refused, as FEEDBACKLOOP_SPAN_LINK_EXPIRY says."""

from __future__ import annotations

import os
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from otlp_support import (
    Span,
    export_request,
    feedback_on,
    free_port,
    genai_attributes,
    metric_values,
    raw_span,
    until,
)
from sqlalchemy import select

from feedbackloop.cli import main
from feedbackloop.store.models import Feedback, PipelineJob, SpanLinkWait
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc, pipeline_pb2, pipeline_pb2_grpc
from support import expect_error

QUEUE_DEPTH = "feedbackloop_pipeline_queue_depth"
OLDEST_AGE = "feedbackloop_pipeline_queue_oldest_age_seconds"


def _unknown_span() -> Span:
    return Span(os.urandom(16).hex(), os.urandom(8).hex())


def _job(db: Any, feedback_id: str) -> tuple[str, str]:
    with db.read() as s:
        row = s.execute(
            select(PipelineJob.status, PipelineJob.last_error).where(PipelineJob.feedback_id == feedback_id)
        ).one()
        return row[0], row[1]


def _state(stub: Any, feedback_id: str) -> common_pb2.Feedback:
    return stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=feedback_id)).feedback


def test_unlinked_feedback_is_kept_and_routed_after_the_wait(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url, span_link_wait_seconds=1)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    span = _unknown_span()
    ack = stub.SubmitFeedback(feedback_on(span, thumb=common_pb2.THUMB_DOWN, idempotency_key="late-1"))
    assert _state(stub, ack.feedback_id).span_link == common_pb2.SPAN_LINK_STATE_PENDING
    assert _job(server.app.db, ack.feedback_id)[0] == "waiting"
    got = until(
        lambda: (f := _state(stub, ack.feedback_id)).span_link == common_pb2.SPAN_LINK_STATE_UNLINKED and f
    )
    assert (got.session_id, got.interaction_id) == (span.trace_id, "")
    assert _job(server.app.db, ack.feedback_id)[0] == "pending"
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id=span.trace_id))
    assert [f.id for f in session.session_feedback] == [ack.feedback_id]
    with server.app.db.read() as s:
        assert s.scalar(select(SpanLinkWait.feedback_id)) is None
        assert s.scalar(select(Feedback.session_feedback_count).where(Feedback.id == ack.feedback_id)) == 1
    # A span arriving after the wait no longer moves the feedback (it may have been routed).
    traces = server.stub(trace_service_pb2_grpc.TraceServiceStub)
    traces.Export(
        export_request(
            raw_span(
                genai_attributes("q", "a"),
                trace_id=bytes.fromhex(span.trace_id),
                span_id=bytes.fromhex(span.span_id),
            )
        )
    )
    assert _state(stub, ack.feedback_id).interaction_id == ""
    # Replaying the submission returns the same feedback.
    again = stub.SubmitFeedback(feedback_on(span, thumb=common_pb2.THUMB_DOWN, idempotency_key="late-1"))
    assert (again.feedback_id, again.created) == (ack.feedback_id, False)


def test_refused_feedback_goes_to_the_dead_letter_after_the_wait(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url, span_link_wait_seconds=1, span_link_expiry="refuse")
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    ack = stub.SubmitFeedback(feedback_on(_unknown_span(), comment="wrong answer"))
    until(lambda: _state(stub, ack.feedback_id).span_link == common_pb2.SPAN_LINK_STATE_REFUSED)
    status, error = _job(server.app.db, ack.feedback_id)
    assert status == "dead"
    assert "did not arrive within FEEDBACKLOOP_SPAN_LINK_WAIT_SECONDS" in error
    pipeline = server.stub(pipeline_pb2_grpc.PipelineServiceStub)
    letters = pipeline.ListDeadLetters(pipeline_pb2.ListDeadLettersRequest())
    assert [letter.feedback_id for letter in letters.dead_letters] == [ack.feedback_id]


def test_a_zero_wait_refuses_an_unknown_span_at_once(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url, span_link_wait_seconds=0)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    span = _unknown_span()
    expect_error(
        lambda: stub.SubmitFeedback(feedback_on(span, thumb=common_pb2.THUMB_UP)),
        grpc.StatusCode.NOT_FOUND,
        f"feedback.span: no span {span.span_id} of trace {span.trace_id} received in this project",
    )


def test_waiting_feedback_is_linked_through_the_stream_too(server) -> None:  # type: ignore[no-untyped-def]
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    span = _unknown_span()
    requests = [
        ingestion_pb2.SubmitFeedbackStreamRequest(
            feedback=feedback_on(span, thumb=common_pb2.THUMB_UP).feedback
        ),
        ingestion_pb2.SubmitFeedbackStreamRequest(feedback=feedback_on(span, rating=2).feedback),
    ]
    acks = stub.SubmitFeedbackStream(iter(requests))
    assert acks.accepted == 2
    traces = server.stub(trace_service_pb2_grpc.TraceServiceStub)
    traces.Export(
        export_request(
            raw_span(
                genai_attributes("q", "a", **{"gen_ai.conversation.id": "c-stream"}),
                trace_id=bytes.fromhex(span.trace_id),
                span_id=bytes.fromhex(span.span_id),
            )
        )
    )
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="c-stream"))
    (turn,) = session.turns
    assert sorted(f.id for f in turn.feedback) == sorted(a.feedback_id for a in acks.acks)
    assert {f.span_link for f in turn.feedback} == {common_pb2.SPAN_LINK_STATE_LINKED}
    with server.app.db.read() as s:
        counts = s.execute(
            select(Feedback.session_feedback_count, Feedback.session_turn_count).order_by(
                Feedback.session_feedback_count
            )
        ).all()
    assert [tuple(c) for c in counts] == [(1, 1), (2, 1)]


def test_span_and_interaction_are_exclusive(server) -> None:  # type: ignore[no-untyped-def]
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    request = feedback_on(
        Span("0" * 32, "zz"), thumb=common_pb2.THUMB_UP, session_id="s", interaction_id="int_1"
    )
    expect_error(
        lambda: stub.SubmitFeedback(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "feedback.span.trace_id: must not be all zeros (an invalid id in W3C trace context); "
        "feedback.span.span_id: must be 16 hex digits (got 'zz'); "
        "feedback.interaction_id: must be empty when span is set (name the interaction one way); "
        "feedback.session_id: must be empty when span is set (the span's interaction decides the session)",
    )


def test_waiting_feedback_shows_in_the_pipeline_status_and_queue_depth(
    make_server: Any, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    server = make_server(database_url=store_url, metrics_port=port, metrics_refresh_seconds=0)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    pipeline = server.stub(pipeline_pb2_grpc.PipelineServiceStub)
    span = _unknown_span()
    stub.SubmitFeedback(feedback_on(span, thumb=common_pb2.THUMB_DOWN))
    stub.SubmitFeedback(feedback_on(span, rating=1))
    status = pipeline.GetPipelineStatus(pipeline_pb2.GetPipelineStatusRequest())
    assert (status.waiting_for_span, status.pending_index) == (2, 0)
    assert main(["pipeline", "status", "--server", server.address]) == 0
    assert "pending index: 0  pending route: 0  waiting for span: 2  " in capsys.readouterr().out
    depth = metric_values(port, QUEUE_DEPTH)
    assert (depth[(("stage", "span_link"),)], depth[(("stage", "index"),)]) == (2.0, 0.0)
    assert metric_values(port, OLDEST_AGE)[(("stage", "span_link"),)] > 0
    # The span arrives: the two move on to the index stage.
    server.stub(trace_service_pb2_grpc.TraceServiceStub).Export(
        export_request(
            raw_span(
                genai_attributes("q", "a"),
                trace_id=bytes.fromhex(span.trace_id),
                span_id=bytes.fromhex(span.span_id),
            )
        )
    )
    status = pipeline.GetPipelineStatus(pipeline_pb2.GetPipelineStatusRequest())
    assert (status.waiting_for_span, status.pending_index) == (0, 2)
    assert main(["pipeline", "status", "--server", server.address]) == 0
    assert "pending index: 2  pending route: 0  waiting for span: 0  " in capsys.readouterr().out
    depth = metric_values(port, QUEUE_DEPTH)
    assert (depth[(("stage", "span_link"),)], depth[(("stage", "index"),)]) == (0.0, 2.0)
