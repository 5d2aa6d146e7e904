"""An application instrumented with the real OpenTelemetry SDK exports its LLM spans over OTLP
gRPC; it then gives feedback by span id and reads the session back."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_support import chat, feedback_on, instrumented_app, until
from sqlalchemy import func, select

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.store.models import Interaction, InteractionSpan, PipelineJob
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from support import bearer, expect_error


def _count(db: Any, model: Any) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_spans_become_a_session_and_feedback_names_the_span(make_server, store_url, db) -> None:  # type: ignore[no-untyped-def]
    key = keys.create_key(db, "acme", frozenset({Scope.INGEST, Scope.READ}))
    server = make_server(database_url=store_url, allow_anonymous_loopback=False)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    with instrumented_app(server.address, key) as app:
        first, span1 = chat(app.tracer, "How much is the Pro plan?", conversation="conv-1")
        second, span2 = chat(app.tracer, "And the team plan?", conversation="conv-1")
        app.flush()

    ack = stub.SubmitFeedback(
        feedback_on(span2, thumb=common_pb2.THUMB_DOWN, comment="prices are outdated"), metadata=bearer(key)
    )
    assert ack.created
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="conv-1"), metadata=bearer(key))
    assert [t.interaction.turn_index for t in session.turns] == [0, 1]
    one, two = (t.interaction for t in session.turns)
    assert [m.content for m in one.input_messages] == ["How much is the Pro plan?"]
    assert [m.role for m in one.input_messages] == ["user"]
    assert (one.response, two.response) == (first, second)
    assert (one.trace_id, one.span_id) == (span1.trace_id, span1.span_id)
    assert (two.model.name, two.model.version) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert two.model.parameters["temperature"] == 0.2
    assert (two.prompt_tokens, two.completion_tokens, two.application) == (12, 9, "support-bot")
    # Attributes no field takes stay as attributes; the mapped ones do not repeat there.
    assert dict(two.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "app.feature": "pricing-faq",
    }
    assert list(session.turns[0].feedback) == []
    (got,) = session.turns[1].feedback
    assert got.id == ack.feedback_id
    assert got.interaction_id == two.id
    assert got.span_link == common_pb2.SPAN_LINK_STATE_LINKED
    assert (got.span.trace_id, got.span.span_id) == (span2.trace_id, span2.span_id)
    assert got.comment == "prices are outdated"


def test_feedback_before_its_span_waits_and_is_linked_when_it_arrives(make_server, store_url, db) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    # The application asks for feedback while its span still sits in the exporter's batch.
    with instrumented_app(server.address, delay_ms=3_600_000) as app:
        _, span = chat(app.tracer, "Is there a free tier?", conversation="conv-early")
        ack = stub.SubmitFeedback(feedback_on(span, thumb=common_pb2.THUMB_UP))
        waiting = stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=ack.feedback_id)).feedback
        assert waiting.span_link == common_pb2.SPAN_LINK_STATE_PENDING
        assert waiting.interaction_id == ""
        assert waiting.session_id == span.trace_id
        with db.read() as session:
            assert (
                session.scalar(select(PipelineJob.status).where(PipelineJob.feedback_id == ack.feedback_id))
                == "waiting"
            )
        app.flush()

    linked = until(
        lambda: (
            (
                f := stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=ack.feedback_id)).feedback
            ).span_link
            == common_pb2.SPAN_LINK_STATE_LINKED
            and f
        )
    )
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="conv-early"))
    (turn,) = session.turns
    assert linked.interaction_id == turn.interaction.id
    assert linked.session_id == "conv-early"
    assert [f.id for f in turn.feedback] == [ack.feedback_id]
    with db.read() as s:
        assert (
            s.scalar(select(PipelineJob.status).where(PipelineJob.feedback_id == ack.feedback_id))
            == "pending"
        )
    # Once linked, the feedback left the trace-id session it waited in.
    expect_error(
        lambda: stub.GetSession(ingestion_pb2.GetSessionRequest(session_id=span.trace_id)),
        grpc.StatusCode.NOT_FOUND,
        f"session_id: no session '{span.trace_id}' in this project",
    )


def test_a_span_exported_twice_is_one_interaction(make_server, store_url, db) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url)
    with instrumented_app(server.address) as app:
        captured = InMemorySpanExporter()
        app.provider.add_span_processor(SimpleSpanProcessor(captured))
        chat(app.tracer, "Hello?")
        app.flush()
        # An exporter retrying a batch the server had stored sends the same spans again.
        assert app.exporter.export(captured.get_finished_spans()) == SpanExportResult.SUCCESS
        assert app.exporter.export(captured.get_finished_spans()) == SpanExportResult.SUCCESS
    assert _count(server.app.db, Interaction) == 1
    assert _count(server.app.db, InteractionSpan) == 1
