"""Server spans: W3C parent from metadata, kind, name, rpc.* attributes, status, stored trace ids."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ingestion_support import record
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from feedbackloop.v1 import common_pb2, ingestion_pb2

S = common_pb2
SUBMIT = "feedbackloop.v1.IngestionService/SubmitFeedback"


def server_spans(spans: Any, name: str) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER and s.name == name]


def test_server_span_joins_the_client_trace(server, stub, spans) -> None:  # type: ignore[no-untyped-def]
    interaction_id = record(stub, "s-trace")
    spans.clear()
    with trace.get_tracer("test-client").start_as_current_span("client-call", kind=SpanKind.CLIENT) as client:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        ack = stub.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(
                feedback=S.Feedback(interaction_id=interaction_id, thumb=S.THUMB_DOWN)
            ),
            metadata=tuple(carrier.items()),
        )
    client_ctx = client.get_span_context()
    trace_id = format(client_ctx.trace_id, "032x")
    assert carrier["traceparent"].startswith(f"00-{trace_id}-{format(client_ctx.span_id, '016x')}-")

    (span,) = server_spans(spans, SUBMIT)
    assert span.kind == SpanKind.SERVER
    assert span.context.trace_id == client_ctx.trace_id
    assert span.parent is not None and span.parent.span_id == client_ctx.span_id
    assert span.parent.is_remote
    assert dict(span.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": "feedbackloop.v1.IngestionService",
        "rpc.method": "SubmitFeedback",
        "rpc.grpc.status_code": grpc.StatusCode.OK.value[0],
    }
    assert span.status.status_code == StatusCode.UNSET

    assert ack.trace_id == trace_id
    got = stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=ack.feedback_id))
    assert got.feedback.trace_id == trace_id
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="s-trace"))
    assert trace_id in session.trace_ids
    assert session.turns[0].feedback[0].trace_id == trace_id


def test_a_raw_traceparent_header_is_honoured(stub, spans) -> None:  # type: ignore[no-untyped-def]
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = stub.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=S.Interaction(session_id="s-raw", turn_index=0, response="x")
        ),
        metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),),
    )
    assert response.trace_id == trace_id
    (span,) = server_spans(spans, "feedbackloop.v1.IngestionService/RecordInteraction")
    assert format(span.parent.span_id, "016x") == parent_id
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="s-raw"))
    assert list(session.trace_ids) == [trace_id]


def test_client_faults_do_not_mark_the_span_as_error(stub, spans) -> None:  # type: ignore[no-untyped-def]
    for request, code in [
        (
            ingestion_pb2.SubmitFeedbackRequest(feedback=S.Feedback(session_id="s-x")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            ingestion_pb2.SubmitFeedbackRequest(feedback=S.Feedback(session_id="s-none", thumb=S.THUMB_UP)),
            grpc.StatusCode.NOT_FOUND,
        ),
    ]:
        spans.clear()
        try:
            stub.SubmitFeedback(request)
        except grpc.RpcError as error:
            assert error.code() == code
        else:
            raise AssertionError("accepted")
        (span,) = server_spans(spans, SUBMIT)
        assert span.status.status_code == StatusCode.UNSET, code
        assert span.attributes["rpc.grpc.status_code"] == code.value[0]
        assert not span.events  # no exception recorded for a client fault


def test_health_checks_produce_no_span(server, spans) -> None:  # type: ignore[no-untyped-def]
    health = health_pb2_grpc.HealthStub(server.channel)
    spans.clear()
    for service in ("", "feedbackloop.v1.IngestionService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert [s.name for s in spans.get_finished_spans()] == []
    # Control: an ordinary call in the same window does produce one.
    stub_call = server.channel.unary_unary(
        "/feedbackloop.v1.IngestionService/ListFeedback",
        request_serializer=ingestion_pb2.ListFeedbackRequest.SerializeToString,
        response_deserializer=ingestion_pb2.ListFeedbackResponse.FromString,
    )
    stub_call(ingestion_pb2.ListFeedbackRequest())
    assert [s.name for s in spans.get_finished_spans()] == ["feedbackloop.v1.IngestionService/ListFeedback"]
