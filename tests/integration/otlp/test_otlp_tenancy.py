"""OTLP under the API keys: spans go to the key's project, `ingest` is required, evaluator
feedback needs `evaluate`, and reflection lists the trace service."""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from otlp_support import evaluation_event, export_request, genai_attributes, raw_span

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from support import bearer, expect_error

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN = bytes.fromhex("b7ad6b7169203331")


def test_spans_are_stored_in_the_key_s_project(make_server, store_url, db) -> None:  # type: ignore[no-untyped-def]
    acme = keys.create_key(db, "acme", frozenset({Scope.INGEST, Scope.READ}))
    globex = keys.create_key(db, "globex", frozenset({Scope.INGEST, Scope.READ}))
    reader = keys.create_key(db, "acme", frozenset({Scope.READ}))
    server = make_server(database_url=store_url, allow_anonymous_loopback=False, span_link_wait_seconds=0)
    traces = server.stub(trace_service_pb2_grpc.TraceServiceStub)
    ingestion = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    conversation = {"gen_ai.conversation.id": "shared-name"}
    # The same ids from two tenants are two spans: ids are unique only within a project.
    traces.Export(
        export_request(
            raw_span(genai_attributes("acme q", "acme a", **conversation), trace_id=TRACE, span_id=SPAN)
        ),
        metadata=bearer(acme),
    )
    traces.Export(
        export_request(
            raw_span(genai_attributes("globex q", "globex a", **conversation), trace_id=TRACE, span_id=SPAN)
        ),
        metadata=bearer(globex),
    )
    for key, reply in ((acme, "acme a"), (globex, "globex a")):
        session = ingestion.GetSession(
            ingestion_pb2.GetSessionRequest(session_id="shared-name"), metadata=bearer(key)
        )
        assert [t.interaction.response for t in session.turns] == [reply]
    expect_error(
        lambda: traces.Export(export_request(raw_span(genai_attributes("q", "a"))), metadata=bearer(reader)),
        grpc.StatusCode.PERMISSION_DENIED,
        "this API key lacks the 'ingest' scope",
    )
    expect_error(
        lambda: traces.Export(export_request(raw_span(genai_attributes("q", "a")))),
        grpc.StatusCode.UNAUTHENTICATED,
        "missing API key: send 'authorization: Bearer <key>' metadata",
    )
    # Feedback names a span of its own project only.
    other = raw_span(genai_attributes("q", "a"))
    traces.Export(export_request(other), metadata=bearer(globex))
    span_ref = common_pb2.SpanRef(trace_id=other.trace_id.hex(), span_id=other.span_id.hex())
    expect_error(
        lambda: ingestion.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(
                feedback=common_pb2.Feedback(span=span_ref, thumb=common_pb2.THUMB_UP)
            ),
            metadata=bearer(acme),
        ),
        grpc.StatusCode.NOT_FOUND,
        f"feedback.span: no span {other.span_id.hex()} of trace {other.trace_id.hex()} received in this project",
    )


def test_evaluation_events_need_the_evaluate_scope(make_server, store_url, db) -> None:  # type: ignore[no-untyped-def]
    app_key = keys.create_key(db, "acme", frozenset({Scope.INGEST, Scope.READ}))
    judge_key = keys.create_key(db, "acme", frozenset({Scope.INGEST, Scope.EVALUATE}))
    server = make_server(database_url=store_url, allow_anonymous_loopback=False)
    traces = server.stub(trace_service_pb2_grpc.TraceServiceStub)
    ingestion = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    verdict = evaluation_event(
        **{
            "gen_ai.evaluation.name": "faithfulness",
            "gen_ai.evaluation.score.value": 0.1,
            "gen_ai.evaluation.score.label": "hallucinated",
            "gen_ai.evaluation.explanation": "The plan price is not in the context.",
        }
    )
    judged = raw_span(
        genai_attributes("Price?", "$5", **{"gen_ai.conversation.id": "c-eval"}), events=[verdict]
    )
    result = traces.Export(export_request(judged), metadata=bearer(app_key)).partial_success
    assert result.rejected_spans == 0
    assert result.error_message == (
        "1 gen_ai.evaluation.result events were dropped: evaluator feedback needs an API key with the 'evaluate' scope"
    )
    session = ingestion.GetSession(
        ingestion_pb2.GetSessionRequest(session_id="c-eval"), metadata=bearer(app_key)
    )
    assert [list(t.feedback) for t in session.turns] == [[]]

    # The judge's key sends the same span again (one interaction), and a child span of its own
    # that judges the call: both evaluations reach the interaction as EVALUATOR feedback.
    child = raw_span(
        {"gen_ai.operation.name": "evaluate"},
        trace_id=judged.trace_id,
        parent_span_id=judged.span_id,
        name="judge",
        events=[
            evaluation_event(
                **{"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.label": "relevant"}
            )
        ],
    )
    for _ in range(2):  # an exporter retry creates nothing more
        response = traces.Export(export_request(judged, child), metadata=bearer(judge_key))
        assert response.partial_success.error_message == "1 spans are not LLM calls and were dropped"
    session = ingestion.GetSession(
        ingestion_pb2.GetSessionRequest(session_id="c-eval"), metadata=bearer(app_key)
    )
    (turn,) = session.turns
    by_name = {f.attributes["gen_ai.evaluation.name"]: f for f in turn.feedback}
    assert sorted(by_name) == ["faithfulness", "relevance"]
    faithfulness, relevance = by_name["faithfulness"], by_name["relevance"]
    assert {f.source for f in turn.feedback} == {common_pb2.FEEDBACK_SOURCE_EVALUATOR}
    assert (faithfulness.thumb, faithfulness.comment) == (
        common_pb2.THUMB_DOWN,
        "The plan price is not in the context.",
    )
    assert faithfulness.attributes["gen_ai.evaluation.score.value"] == "0.1"
    assert (relevance.thumb, relevance.comment) == (common_pb2.THUMB_UP, "")
    assert {f.interaction_id for f in turn.feedback} == {turn.interaction.id}


def test_reflection_lists_the_trace_service(server) -> None:  # type: ignore[no-untyped-def]
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in answer.list_services_response.service}
    assert "opentelemetry.proto.collector.trace.v1.TraceService" in names
