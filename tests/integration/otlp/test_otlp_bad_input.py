"""Bad OTLP: a refused span is named with its reason in partial_success and changes nothing;
the good spans of the batch are stored; bytes that are not OTLP are INVALID_ARGUMENT."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from otlp_support import export_request, genai_attributes, raw_span
from sqlalchemy import func, select

from feedbackloop.store.models import Feedback, Interaction, InteractionSpan
from feedbackloop.v1 import ingestion_pb2, ingestion_pb2_grpc
from support import code_of

TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


def rows(db: Any) -> tuple[int, int, int]:
    with db.read() as s:
        return tuple(
            s.scalar(select(func.count()).select_from(m)) or 0
            for m in (Interaction, InteractionSpan, Feedback)
        )  # type: ignore[return-value]


@pytest.fixture
def trace_stub(server: Any) -> Any:
    return server.stub(trace_service_pb2_grpc.TraceServiceStub)


def test_bad_spans_are_refused_alone_and_named(server, trace_stub) -> None:  # type: ignore[no-untyped-def]
    good = raw_span(
        genai_attributes("q1", "a1", **{"gen_ai.conversation.id": "c-bad"}),
        trace_id=TRACE,
        span_id=bytes.fromhex("00f067aa0ba902b7"),
    )
    no_trace = raw_span(genai_attributes("q2", "a2"), trace_id=b"", name="chat no-trace")
    short_span = raw_span(genai_attributes("q3", "a3"), span_id=b"\x01\x02")
    bomb = raw_span({**genai_attributes("q4", "a4"), **{f"junk.{i}": "x" for i in range(5000)}}, name="bomb")
    huge = raw_span(genai_attributes("q5", "y" * 40_000), name="huge")
    bad_json = raw_span(
        {**genai_attributes("q6", "a6"), "gen_ai.input.messages": "[{not json"}, name="badjson"
    )
    bad_role = raw_span(
        {
            **genai_attributes("q7", "a7"),
            "gen_ai.input.messages": json.dumps([{"role": "narrator", "content": "x"}]),
        },
        name="badrole",
    )
    no_start = raw_span(genai_attributes("q8", "a8"), name="nostart")
    no_start.start_time_unix_nano = 0
    http = raw_span({"http.request.method": "GET"}, name="GET /")
    second_good = raw_span(
        genai_attributes("q9", "a9", **{"gen_ai.conversation.id": "c-bad"}), trace_id=TRACE
    )
    response = trace_stub.Export(
        export_request(
            good, no_trace, short_span, bomb, huge, bad_json, bad_role, no_start, http, second_good
        )
    )
    result = response.partial_success
    assert result.rejected_spans == 7
    message = result.error_message
    assert message.startswith("7 of 10 spans refused, nothing of them stored: ")
    prefix = "resource_spans[0].scope_spans[0]"
    for expected in [
        f"{prefix}.spans[1] 'chat no-trace' (span {no_trace.span_id.hex()} of trace -): has no trace_id",
        f"{prefix}.spans[2] 'chat gpt-4o' (span 0102 of trace {short_span.trace_id.hex()}): span_id must be 8 bytes (got 2)",
        f"{prefix}.spans[3] 'bomb' (span {bomb.span_id.hex()} of trace {bomb.trace_id.hex()}): has 5004 attributes; at most 1024 are read per span",
        "'huge' (span",
        "gen_ai.output.messages (interaction.response): is 40000 characters long; the limit is 32000",
        "'badjson' (span",
        "gen_ai.input.messages: is not valid JSON (",
        "gen_ai.input.messages (interaction.input_messages[0].role): must be one of assistant, system, tool, user",
        f"{prefix}.spans[7] 'nostart' (span {no_start.span_id.hex()} of trace {no_start.trace_id.hex()}): start_time_unix_nano is not set",
        "1 spans are not LLM calls and were dropped",
    ]:
        assert expected in message, (expected, message)
    assert len(message) < 6000
    # The two good spans, and nothing of the others.
    assert rows(server.app.db) == (2, 2, 0)
    session = server.stub(ingestion_pb2_grpc.IngestionServiceStub).GetSession(
        ingestion_pb2.GetSessionRequest(session_id="c-bad")
    )
    assert [t.interaction.response for t in session.turns] == ["a1", "a9"]


def test_a_whole_batch_of_good_spans_gets_no_partial_success(server, trace_stub) -> None:  # type: ignore[no-untyped-def]
    response = trace_stub.Export(export_request(raw_span(genai_attributes("q", "a"))))
    assert not response.HasField("partial_success")
    assert rows(server.app.db) == (1, 1, 0)


def test_free_attributes_past_the_limit_are_dropped_and_counted(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url, max_attributes=3)
    stub = server.stub(trace_service_pb2_grpc.TraceServiceStub)
    extra = {"a.1": "1", "a.2": "2", "a.3": "3", "a.4": "4", "k" * 200: "long key"}
    span = raw_span(genai_attributes("q", "a", **{"gen_ai.conversation.id": "c-attrs"}, **extra))
    result = stub.Export(export_request(span)).partial_success
    assert result.rejected_spans == 0
    assert "3 free attributes of stored spans were dropped" in result.error_message
    session = server.stub(ingestion_pb2_grpc.IngestionServiceStub).GetSession(
        ingestion_pb2.GetSessionRequest(session_id="c-attrs")
    )
    assert dict(session.turns[0].interaction.attributes) == {
        "gen_ai.operation.name": "chat",
        "a.1": "1",
        "a.2": "2",
    }


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            b"\x0a\x05\x0a\x03\xff",
            "resource_spans[0]: is truncated (its length runs past the end of the message)",
        ),
        (b"\x0a\x03\x0a\x01\xff", "resource_spans[0].resource: is truncated or has a malformed varint"),
        (b"\xff\xff\xff", "request: is truncated or has a malformed varint"),
    ],
)
def test_bytes_that_are_not_otlp_are_invalid_argument(
    server, trace_stub, payload: bytes, message: str
) -> None:  # type: ignore[no-untyped-def]
    call = server.channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    code, details = code_of(lambda: call(payload))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(message), details
    assert "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest" in details
    assert rows(server.app.db) == (0, 0, 0)
