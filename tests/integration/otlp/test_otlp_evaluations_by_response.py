"""A `gen_ai.evaluation.result` event that is not under the LLM span it judges names the
completion by `gen_ai.response.id` (as the GenAI semantic conventions say a judge should when
it cannot parent the event to the span), and becomes evaluator feedback on that interaction."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from otlp_support import chat, evaluation_event, export_request, genai_attributes, instrumented_app, raw_span
from sqlalchemy import func, select

from feedbackloop.store.models import Feedback
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc

VERDICT = {
    "gen_ai.evaluation.name": "faithfulness",
    "gen_ai.evaluation.score.value": 0.2,
    "gen_ai.evaluation.score.label": "fail",
    "gen_ai.evaluation.explanation": "The price is not in the context.",
}


def _feedback_count(db: Any) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(Feedback)) or 0


def test_an_offline_judge_names_the_response_it_judged(server) -> None:  # type: ignore[no-untyped-def]
    ingestion = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    # The application's call, exported by the real SDK with the provider's response id.
    with instrumented_app(server.address) as app:
        chat(app.tracer, "How much is Pro?", conversation="c-judged", response_id="chatcmpl-9a1")
        chat(app.tracer, "And Team?", conversation="c-judged", response_id="chatcmpl-9a2")
        app.flush()
    # Later, a judge in another process and another trace: its own root span carries the event.
    with instrumented_app(server.address, service="offline-judge") as judge:
        with judge.tracer.start_as_current_span("evaluate faithfulness") as span:
            span.set_attribute("gen_ai.operation.name", "evaluate")
            span.add_event("gen_ai.evaluation.result", {**VERDICT, "gen_ai.response.id": "chatcmpl-9a2"})
        judge.flush()
    session = ingestion.GetSession(ingestion_pb2.GetSessionRequest(session_id="c-judged"))
    first, second = session.turns
    assert list(first.feedback) == []
    (verdict,) = second.feedback
    assert verdict.source == common_pb2.FEEDBACK_SOURCE_EVALUATOR
    assert verdict.interaction_id == second.interaction.id
    assert verdict.span_link == common_pb2.SPAN_LINK_STATE_LINKED
    assert (verdict.span.trace_id, verdict.span.span_id) == (
        second.interaction.trace_id,
        second.interaction.span_id,
    )
    assert (verdict.thumb, verdict.comment) == (common_pb2.THUMB_DOWN, "The price is not in the context.")
    assert verdict.attributes["gen_ai.response.id"] == "chatcmpl-9a2"


def test_the_response_may_come_in_the_same_batch_and_an_unknown_one_is_reported(server) -> None:  # type: ignore[no-untyped-def]
    traces = server.stub(trace_service_pb2_grpc.TraceServiceStub)
    ingestion = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    judge_first = raw_span(
        {"gen_ai.operation.name": "evaluate"},
        name="judge",
        events=[evaluation_event(**VERDICT, **{"gen_ai.response.id": "resp-batch"})],
    )
    call = raw_span(
        genai_attributes(
            "q", "a", **{"gen_ai.conversation.id": "c-batch", "gen_ai.response.id": "resp-batch"}
        )
    )
    # A second instrumentation of the same call reports the same response id: the first keeps it.
    wrapper = raw_span(
        genai_attributes(
            "q", "a", **{"gen_ai.conversation.id": "c-wrapper", "gen_ai.response.id": "resp-batch"}
        )
    )
    lost = raw_span(
        {"gen_ai.operation.name": "evaluate"},
        name="judge",
        events=[evaluation_event(**VERDICT, **{"gen_ai.response.id": "resp-never-sent"})],
    )
    for _ in range(2):  # an exporter's retry: the same spans, nothing more
        response = traces.Export(export_request(judge_first, call, wrapper, lost))
    assert response.partial_success.rejected_spans == 0
    assert response.partial_success.error_message == (
        "2 spans are not LLM calls and were dropped. a gen_ai.evaluation.result event on span "
        f"{lost.span_id.hex()} was dropped: no LLM span with gen_ai.response.id 'resp-never-sent' has been received"
    )
    (turn,) = ingestion.GetSession(ingestion_pb2.GetSessionRequest(session_id="c-batch")).turns
    assert [f.source for f in turn.feedback] == [common_pb2.FEEDBACK_SOURCE_EVALUATOR]
    (other,) = ingestion.GetSession(ingestion_pb2.GetSessionRequest(session_id="c-wrapper")).turns
    assert list(other.feedback) == []
    # The wrapper's later verdict by the same id still goes to the first interaction.
    traces.Export(
        export_request(
            raw_span(
                {"gen_ai.operation.name": "evaluate"},
                name="judge",
                events=[
                    evaluation_event(
                        **{**VERDICT, "gen_ai.evaluation.name": "relevance"},
                        **{"gen_ai.response.id": "resp-batch"},
                    )
                ],
            )
        )
    )
    (turn,) = ingestion.GetSession(ingestion_pb2.GetSessionRequest(session_id="c-batch")).turns
    assert sorted(f.attributes["gen_ai.evaluation.name"] for f in turn.feedback) == [
        "faithfulness",
        "relevance",
    ]
    assert _feedback_count(server.app.db) == 2


def test_a_malformed_event_naming_a_response_refuses_its_span(server) -> None:  # type: ignore[no-untyped-def]
    traces = server.stub(trace_service_pb2_grpc.TraceServiceStub)
    traces.Export(export_request(raw_span(genai_attributes("q", "a", **{"gen_ai.response.id": "resp-x"}))))
    nameless = raw_span(
        {"gen_ai.operation.name": "evaluate"},
        name="judge",
        events=[
            evaluation_event(**{"gen_ai.evaluation.score.label": "pass", "gen_ai.response.id": "resp-x"})
        ],
    )
    response = traces.Export(export_request(nameless))
    assert response.partial_success.rejected_spans == 1
    assert "events[0] (gen_ai.evaluation.result): gen_ai.evaluation.name is required" in (
        response.partial_success.error_message
    )
    assert _feedback_count(server.app.db) == 0


def test_a_blank_response_id_leaves_the_event_to_its_llm_parent(server) -> None:  # type: ignore[no-untyped-def]
    # A judge's span under the call it judges, its event carrying a response id no span could
    # be stored under: the parent still places the verdict.
    traces = server.stub(trace_service_pb2_grpc.TraceServiceStub)
    call = raw_span(genai_attributes("q", "a", **{"gen_ai.conversation.id": "c-blank"}))
    judge = raw_span(
        {"gen_ai.operation.name": "evaluate"},
        trace_id=call.trace_id,
        parent_span_id=call.span_id,
        name="judge",
        events=[evaluation_event(**VERDICT, **{"gen_ai.response.id": "   "})],
    )
    response = traces.Export(export_request(call, judge))
    assert "was dropped" not in response.partial_success.error_message
    assert _feedback_count(server.app.db) == 1
