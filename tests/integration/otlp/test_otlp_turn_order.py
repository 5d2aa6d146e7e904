"""The turns of a session's spans follow their start times, whatever order they arrive in; spans
that started at the same time keep the request's order, not their span ids'."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from otlp_support import export_request, genai_attributes, raw_span

from feedbackloop.v1 import ingestion_pb2, ingestion_pb2_grpc

START = 1_764_000_000_000_000_000
MS = 1_000_000


def _span(reply: str, start: int, span_id: bytes):  # type: ignore[no-untyped-def]
    attrs = genai_attributes(f"q-{reply}", reply, **{"gen_ai.conversation.id": "order-1"})
    return raw_span(attrs, trace_id=b"\x07" * 16, span_id=span_id, start=start)


def test_turns_follow_start_time_then_request_order(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url)
    traces = server.stub(trace_service_pb2_grpc.TraceServiceStub)
    # The span that started last comes first; the two that started in the same millisecond
    # (as the Node SDK stamps two quick calls) come in the order they ended, the second with
    # the smaller span id.
    traces.Export(
        export_request(
            _span("third", START + 2 * MS, b"\x80" * 8),
            _span("first", START, b"\xff" * 8),
            _span("second", START, b"\x01" * 8),
        )
    )
    # A span arriving in a later request takes the next turn even though it started earlier:
    # stored turns are not renumbered.
    traces.Export(export_request(_span("late", START - MS, b"\x02" * 8)))
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="order-1"))
    assert [(t.interaction.turn_index, t.interaction.response) for t in session.turns] == [
        (0, "first"),
        (1, "second"),
        (2, "third"),
        (3, "late"),
    ]
