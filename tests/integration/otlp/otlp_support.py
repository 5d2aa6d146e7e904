"""Helpers for the OTLP tests (imported by name; not a test module): an application instrumented
with the real OpenTelemetry SDK and its OTLP gRPC exporter, and raw OTLP spans."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2 as otlp_common
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Tracer
from prometheus_client.parser import text_string_to_metric_families

from feedbackloop.v1 import common_pb2, ingestion_pb2


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str


@dataclass
class App:
    """An instrumented application: its tracer exports to the server over OTLP/gRPC."""

    provider: TracerProvider
    tracer: Tracer
    exporter: OTLPSpanExporter

    def flush(self) -> None:
        assert self.provider.force_flush(10_000)

    def close(self) -> None:
        self.provider.shutdown()


@contextmanager
def instrumented_app(
    address: str, key: str | None = None, service: str = "support-bot", delay_ms: int = 100
) -> Iterator[App]:
    # What the application sets: an endpoint and an authorization header (OTEL_EXPORTER_OTLP_*).
    headers = (("authorization", f"Bearer {key}"),) if key else None
    exporter = OTLPSpanExporter(endpoint=f"http://{address}", insecure=True, headers=headers, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_export_batch_size=512, schedule_delay_millis=delay_ms)
    )
    app = App(provider, provider.get_tracer("fake-llm-client"), exporter)
    try:
        yield app
    finally:
        app.close()


def answer(question: str) -> str:
    """The fake model: what the instrumented call returns."""
    return f"The answer to '{question}' is 42."


def chat(
    tracer: Tracer,
    question: str,
    *,
    conversation: str | None = None,
    model: str = "gpt-4o",
    evaluation: dict[str, Any] | None = None,
    response_id: str | None = None,
) -> tuple[str, Span]:
    """A chat completion as a GenAI instrumentation records it (semantic conventions, current
    JSON message attributes); the answer and the span's ids."""
    with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT) as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.provider.name", "openai")
        span.set_attribute("gen_ai.request.model", model)
        span.set_attribute("gen_ai.request.temperature", 0.2)
        if conversation:
            span.set_attribute("gen_ai.conversation.id", conversation)
        messages = [{"role": "user", "parts": [{"type": "text", "content": question}]}]
        span.set_attribute("gen_ai.input.messages", json.dumps(messages))
        text = answer(question)
        span.set_attribute("gen_ai.response.model", f"{model}-2024-08-06")
        if response_id:
            span.set_attribute("gen_ai.response.id", response_id)
        span.set_attribute(
            "gen_ai.output.messages",
            json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}]
            ),
        )
        span.set_attribute("gen_ai.usage.input_tokens", 12)
        span.set_attribute("gen_ai.usage.output_tokens", 9)
        span.set_attribute("app.feature", "pricing-faq")
        if evaluation is not None:
            span.add_event("gen_ai.evaluation.result", evaluation)
        context = span.get_span_context()
    return text, Span(format(context.trace_id, "032x"), format(context.span_id, "016x"))


def feedback_on(span: Span, **fields: Any) -> ingestion_pb2.SubmitFeedbackRequest:
    return ingestion_pb2.SubmitFeedbackRequest(
        feedback=common_pb2.Feedback(
            span=common_pb2.SpanRef(trace_id=span.trace_id, span_id=span.span_id), **fields
        )
    )


def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(0.05)


# --- metrics ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric_values(port: int, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of `name` on the server's /metrics, by their labels (the exporter's scope
    labels left out)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        tuple(
            sorted((k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope_"))
        ): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


# --- raw OTLP ---


def text_value(value: str) -> otlp_common.AnyValue:
    return otlp_common.AnyValue(string_value=value)


def attributes(values: dict[str, Any]) -> list[otlp_common.KeyValue]:
    out = []
    for key, value in values.items():
        if isinstance(value, bool):
            any_value = otlp_common.AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = otlp_common.AnyValue(int_value=value)
        elif isinstance(value, float):
            any_value = otlp_common.AnyValue(double_value=value)
        else:
            any_value = text_value(value)
        out.append(otlp_common.KeyValue(key=key, value=any_value))
    return out


def raw_span(
    attrs: dict[str, Any],
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent_span_id: bytes = b"",
    name: str = "chat gpt-4o",
    start: int | None = None,
    events: Sequence[trace_pb2.Span.Event] = (),
) -> trace_pb2.Span:
    start = start or time.time_ns()
    return trace_pb2.Span(
        trace_id=os.urandom(16) if trace_id is None else trace_id,
        span_id=os.urandom(8) if span_id is None else span_id,
        parent_span_id=parent_span_id,
        name=name,
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 250_000_000,
        attributes=attributes(attrs),
        events=list(events),
    )


def genai_attributes(question: str, reply: str, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": question}]}]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": reply}]}]
        ),
    }
    values.update(extra)
    return values


def export_request(
    *spans: trace_pb2.Span, service: str = "raw-app"
) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=attributes({"service.name": service})),
                scope_spans=[trace_pb2.ScopeSpans(spans=list(spans))],
            )
        ]
    )


def evaluation_event(**attrs: Any) -> trace_pb2.Span.Event:
    return trace_pb2.Span.Event(
        name="gen_ai.evaluation.result", time_unix_nano=time.time_ns(), attributes=attributes(attrs)
    )
