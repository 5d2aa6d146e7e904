"""Each convention's forms map to the same interaction; other spans are not LLM calls."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry.proto.common.v1 import common_pb2 as otlp_common
from opentelemetry.proto.trace.v1 import trace_pb2

from feedbackloop.ingestion.validation import Limits
from feedbackloop.otlp.attributes import attribute_map
from feedbackloop.otlp.mapping import GENAI, OPENINFERENCE, convention, map_span

LIMITS = Limits(max_text_chars=32_000, max_attributes=64, max_future_skew=timedelta(seconds=300))
TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


def kv(values: dict[str, Any]) -> list[otlp_common.KeyValue]:
    out = []
    for key, value in values.items():
        if isinstance(value, int):
            out.append(otlp_common.KeyValue(key=key, value=otlp_common.AnyValue(int_value=value)))
        else:
            out.append(otlp_common.KeyValue(key=key, value=otlp_common.AnyValue(string_value=value)))
    return out


def span(attrs: dict[str, Any], events: list[tuple[str, dict[str, Any]]] = ()) -> trace_pb2.Span:  # type: ignore[assignment]
    start = time.time_ns()
    return trace_pb2.Span(
        trace_id=TRACE,
        span_id=bytes.fromhex("00f067aa0ba902b7"),
        name="llm",
        start_time_unix_nano=start,
        end_time_unix_nano=start + 1_500_000_000,
        attributes=kv(attrs),
        events=[trace_pb2.Span.Event(name=n, time_unix_nano=start, attributes=kv(a)) for n, a in events],
    )


FORMS = {
    "genai current": (
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "Price?"}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "$10."}],
                        "finish_reason": "stop",
                    }
                ]
            ),
            "gen_ai.conversation.id": "c-1",
        },
        [],
    ),
    "genai older attributes": (
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "llm.request.type": "chat",
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "Be brief.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "Price?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "$10.",
            "gen_ai.conversation.id": "c-1",
        },
        [],
    ),
    "genai older events": (
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.conversation.id": "c-1"},
        [
            (
                "gen_ai.content.prompt",
                {
                    "gen_ai.prompt": json.dumps(
                        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Price?"}]
                    )
                },
            ),
            (
                "gen_ai.content.completion",
                {"gen_ai.completion": json.dumps([{"role": "assistant", "content": "$10."}])},
            ),
        ],
    ),
    "openinference": (
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "Be brief.",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.content": "Price?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "$10.",
            "session.id": "c-1",
        },
        [],
    ),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_gives_the_same_turn(form: str) -> None:
    attrs, events = FORMS[form]
    s = span(attrs, events)
    attributes = attribute_map(s.attributes)
    kind = convention(attributes)
    assert kind == (OPENINFERENCE if form == "openinference" else GENAI)
    mapped = map_span(s, kind, attributes, {"service.name": "bot"}, LIMITS, datetime.now(UTC))
    data = mapped.interaction
    assert data is not None
    assert data.session_id == "c-1"
    assert data.input_messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Price?"},
    ]
    assert data.response == "$10."
    assert (data.model_name, data.application, data.latency_ms) == ("gpt-4o", "bot", 1500)
    assert (mapped.trace_id, mapped.span_id) == (TRACE.hex(), "00f067aa0ba902b7")


def test_openinference_plain_values_and_tokens() -> None:
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "claude",
        "input.value": "Price?",
        "output.value": "$10.",
        "llm.token_count.prompt": 7,
        "llm.token_count.completion": 3,
        "llm.invocation_parameters": json.dumps({"temperature": 0.5}),
        "user.id": "u-1",
        "llm.prompt_template.version": "v3",
        "tag.tags": "x",
    }
    s = span(attrs)
    attributes = attribute_map(s.attributes)
    data = map_span(s, OPENINFERENCE, attributes, {}, LIMITS, datetime.now(UTC)).interaction
    assert data is not None
    assert data.session_id == TRACE.hex()  # no session id: the trace is the session
    assert (data.input_messages, data.response) == ([{"role": "user", "content": "Price?"}], "$10.")
    assert (data.prompt_tokens, data.completion_tokens, data.user_id, data.prompt_version) == (
        7,
        3,
        "u-1",
        "v3",
    )
    assert data.model_parameters == {"temperature": 0.5}
    assert data.attributes == {"tag.tags": "x"}


@pytest.mark.parametrize(
    "attrs",
    [
        {"http.request.method": "GET"},
        {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3"},
        {"gen_ai.operation.name": "execute_tool"},
        {"openinference.span.kind": "RETRIEVER"},
        {"openinference.span.kind": "CHAIN", "gen_ai.request.model": "gpt-4o"},
    ],
)
def test_other_spans_are_not_llm_calls(attrs: dict[str, Any]) -> None:
    assert convention(attrs) is None
