"""Spans that are not stored are counted where an operator looks: the Export response says how
many and why, and `feedbackloop_otlp_spans_dropped_total` counts them by reason."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.trace import SpanKind
from otlp_support import (
    chat,
    export_request,
    free_port,
    genai_attributes,
    instrumented_app,
    metric_values,
    raw_span,
)

DROPPED = "feedbackloop_otlp_spans_dropped_total"


def _dropped(port: int) -> dict[str, float]:
    """The counter's value by reason, its only label."""
    found: dict[str, float] = {}
    for labels, value in metric_values(port, DROPPED).items():
        assert [k for k, _ in labels] == ["reason"], labels
        found[labels[0][1]] = value
    return found


def test_spans_not_stored_are_counted_by_reason(make_server: Any, store_url: str) -> None:
    port = free_port()
    server = make_server(database_url=store_url, metrics_port=port)
    # The real SDK: an LLM call inside an HTTP handler, and a database call beside it.
    with instrumented_app(server.address) as app:
        with app.tracer.start_as_current_span("GET /pricing", kind=SpanKind.SERVER):
            chat(app.tracer, "How much is the Pro plan?", conversation="c-drop")
            with app.tracer.start_as_current_span("SELECT plans") as db_span:
                db_span.set_attribute("db.system.name", "postgresql")
        app.flush()
    assert _dropped(port) == {"not_llm": 2.0}

    # A batch with a refused span and a non-LLM span: both reasons, and the response says so.
    stub = server.stub(trace_service_pb2_grpc.TraceServiceStub)
    response = stub.Export(
        export_request(
            raw_span(genai_attributes("q", "a"), trace_id=b"", name="chat no-trace"),
            raw_span({"http.request.method": "GET"}, name="GET /"),
            raw_span(genai_attributes("q2", "a2")),
        )
    )
    assert response.partial_success.rejected_spans == 1
    assert "1 spans are not LLM calls and were dropped" in response.partial_success.error_message
    assert _dropped(port) == {"not_llm": 3.0, "refused": 1.0}
    # Replays of stored spans are not drops.
    stub.Export(export_request(raw_span(genai_attributes("q3", "a3"))))
    assert _dropped(port) == {"not_llm": 3.0, "refused": 1.0}
