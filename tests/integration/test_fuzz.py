"""Fuzz every RPC the server serves, over real gRPC on loopback.

The methods come from the generated descriptors of `feedbackloop.v1` (plus the health check and
OTLP's TraceService),
kept when the server's reflection lists their service, so a new RPC is fuzzed without touching
this file. Each gets random bytes, mutations of a valid serialized request (bytes flipped,
inserted, deleted) and requests with extreme field values (huge strings, NUL, negative and
huge integers, out-of-range enums, timestamps and durations, NaN); a client-streaming RPC also
gets streams mixing them with valid messages. Whatever comes in:

- the answer is never INTERNAL or UNKNOWN (a crash inside the server),
- a refused request changes no row of any table,
- the server still reports SERVING, and shutdown still completes within its grace.

A fixed seed keeps a run reproducible and is printed with every failure. `make test` runs a
few cases per RPC; FEEDBACKLOOP_FUZZ_ITERATIONS=500 (and FEEDBACKLOOP_FUZZ_SEED) for a long run.
"""

from __future__ import annotations

import math
import os
import pkgutil
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hostile_support import (
    DATASET,
    PROMPT,
    QUEUE,
    SESSION,
    Loaded,
    example_policy_files,
    row_counts,
    start_loaded,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2 as otlp_common
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace

import feedbackloop.v1
from feedbackloop.v1 import (
    common_pb2,
    datasets_pb2,
    ingestion_pb2,
    prompts_pb2,
    recall_pb2,
    reviews_pb2,
    routing_pb2,
)

SEED = int(os.environ.get("FEEDBACKLOOP_FUZZ_SEED", "90210"))
ITERATIONS = int(os.environ.get("FEEDBACKLOOP_FUZZ_ITERATIONS", "6"))
CRASHES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
CALL_TIMEOUT = 20.0
SHUTDOWN_GRACE = 2.0
Field = pb_descriptor.FieldDescriptor

STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x01\x1f\x7f",
    "v" * 65,  # past a 64-wide column
    "w" * 129,  # past a 128-wide column
    "x" * 100_000,
    "é" * 3_000,
    "\u202e\ufeff\U0001f600",
    "99999999999999999999",
    "-1",
    "²",
    "'; DROP TABLE feedback; --",
    '"} or project_id != "',
    "%_\\",
    "../../etc/passwd",
]
INTS = [0, 1, -1, 7, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
FLOATS = [0.0, -0.0, 1.5, -1.0, 1e308, -1e308, math.nan, math.inf, -math.inf, 5e-324]
INT_BOUNDS = {
    Field.TYPE_INT32: (-(2**31), 2**31 - 1),
    Field.TYPE_SINT32: (-(2**31), 2**31 - 1),
    Field.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    Field.TYPE_INT64: (-(2**63), 2**63 - 1),
    Field.TYPE_SINT64: (-(2**63), 2**63 - 1),
    Field.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    Field.TYPE_UINT32: (0, 2**32 - 1),
    Field.TYPE_FIXED32: (0, 2**32 - 1),
    Field.TYPE_UINT64: (0, 2**64 - 1),
    Field.TYPE_FIXED64: (0, 2**64 - 1),
    Field.TYPE_ENUM: (-(2**31), 2**31 - 1),
}


@dataclass(frozen=True)
class Method:
    path: str
    request: pb_descriptor.Descriptor
    client_streaming: bool
    server_streaming: bool


def served_methods(channel: grpc.Channel) -> list[Method]:
    """Every method of every generated service that this server serves."""
    served = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    services: list[pb_descriptor.ServiceDescriptor] = [
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"],
    ]
    for module in pkgutil.iter_modules(feedbackloop.v1.__path__):
        if module.name.endswith("_pb2"):
            file = import_module(f"feedbackloop.v1.{module.name}").DESCRIPTOR
            services.extend(file.services_by_name.values())
    methods = [
        Method(f"/{s.full_name}/{m.name}", m.input_type, m.client_streaming, m.server_streaming)
        for s in services
        if s.full_name in served
        for m in s.methods
    ]
    assert {s.full_name for s in services} & served, "reflection lists none of the generated services"
    return methods


def message_class(descriptor: pb_descriptor.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def valid_requests(loaded: Loaded) -> dict[str, Message]:
    """A request each method accepts (or refuses only for state), as the base of mutations."""
    fb = loaded.feedback_id
    files = example_policy_files()
    feedback = common_pb2.Feedback(interaction_id=loaded.interaction_id, thumb=common_pb2.THUMB_UP)
    window = common_pb2.TimeRange(start={"seconds": 1_700_000_000}, end={"seconds": 1_800_000_000})
    requests: dict[str, Message] = {
        "IngestionService/RecordInteraction": ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(
                session_id=SESSION,
                turn_index=3,
                input_messages=[common_pb2.ChatMessage(role="user", content="hi")],
                response="hello",
                attributes={"k": "v"},
            )
        ),
        "IngestionService/SubmitFeedback": ingestion_pb2.SubmitFeedbackRequest(feedback=feedback),
        "IngestionService/SubmitFeedbackStream": ingestion_pb2.SubmitFeedbackStreamRequest(feedback=feedback),
        "IngestionService/GetFeedback": ingestion_pb2.GetFeedbackRequest(feedback_id=fb),
        "IngestionService/GetSession": ingestion_pb2.GetSessionRequest(session_id=SESSION),
        "IngestionService/ListFeedback": ingestion_pb2.ListFeedbackRequest(
            filter=common_pb2.FeedbackFilter(
                time_range=window, signals=[common_pb2.SIGNAL_THUMBS_DOWN], categories=["unsafe"]
            ),
            page_size=5,
        ),
        "IngestionService/CreateFeedbackToken": ingestion_pb2.CreateFeedbackTokenRequest(
            interaction_id=loaded.interaction_id, ttl_seconds=60
        ),
        "RecallService/SearchSimilar": recall_pb2.SearchSimilarRequest(text="outdated price", top_k=3),
        "RecallService/TopIssues": recall_pb2.TopIssuesRequest(time_range=window),
        "RecallService/GetTrends": recall_pb2.GetTrendsRequest(
            window={"seconds": 14 * 86400}, group_by=recall_pb2.TREND_DIMENSION_SIGNAL, top=3
        ),
        "RoutingService/ValidatePolicies": routing_pb2.ValidatePoliciesRequest(files=files),
        "RoutingService/PlanPolicies": routing_pb2.PlanPoliciesRequest(files=files, skip_backtest=True),
        "RoutingService/ApplyPolicies": routing_pb2.ApplyPoliciesRequest(files=files),
        "RoutingService/GetRevision": routing_pb2.GetRevisionRequest(revision=1),
        "RoutingService/Rollback": routing_pb2.RollbackRequest(revision=1),
        "RoutingService/Evaluate": routing_pb2.EvaluateRequest(feedback_id=fb),
        "RoutingService/Explain": routing_pb2.ExplainRequest(feedback_id=fb),
        "PromptService/GetPrompt": prompts_pb2.GetPromptRequest(name=PROMPT, label="1"),
        "PromptService/ListPatches": prompts_pb2.ListPatchesRequest(prompt=PROMPT),
        "PromptService/RollbackPrompt": prompts_pb2.RollbackPromptRequest(name=PROMPT, version=1),
        "DatasetService/ListItems": datasets_pb2.ListItemsRequest(dataset=DATASET),
        "DatasetService/ExportDataset": datasets_pb2.ExportDatasetRequest(dataset=DATASET),
        "ReviewService/ListReviewItems": reviews_pb2.ListReviewItemsRequest(queue=QUEUE),
        "ReviewService/ClaimReviewItem": reviews_pb2.ClaimReviewItemRequest(queue=QUEUE),
        "ReviewService/ResolveReviewItem": reviews_pb2.ResolveReviewItemRequest(
            claim_id="rc_nope", verdict=reviews_pb2.REVIEW_VERDICT_ACCEPT
        ),
        "ReviewService/ReleaseReviewClaim": reviews_pb2.ReleaseReviewClaimRequest(claim_id="rc_nope"),
        "ReviewService/RenewReviewClaim": reviews_pb2.RenewReviewClaimRequest(claim_id="rc_nope"),
        "ReviewService/GetReviewQueueStats": reviews_pb2.GetReviewQueueStatsRequest(queue=QUEUE),
        "Health/Check": health_pb2.HealthCheckRequest(service=""),
        "TraceService/Export": llm_span_export(),
    }
    return requests


def llm_span_export() -> trace_service_pb2.ExportTraceServiceRequest:
    """One GenAI chat span, so mutations start from a span the server would store."""

    def text(key: str, value: str) -> otlp_common.KeyValue:
        return otlp_common.KeyValue(key=key, value=otlp_common.AnyValue(string_value=value))

    span = otlp_trace.Span(
        trace_id=bytes(range(1, 17)),
        span_id=bytes(range(1, 9)),
        name="chat gpt-4o",
        kind=otlp_trace.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=1_764_000_000_000_000_000,
        end_time_unix_nano=1_764_000_000_250_000_000,
        attributes=[
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.request.model", "gpt-4o"),
            text("gen_ai.input.messages", '[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]'),
            text(
                "gen_ai.output.messages",
                '[{"role": "assistant", "parts": [{"type": "text", "content": "hello"}]}]',
            ),
        ],
    )
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[otlp_trace.ResourceSpans(scope_spans=[otlp_trace.ScopeSpans(spans=[span])])]
    )


def base_request(method: Method, valid: dict[str, Message]) -> Message:
    for suffix, request in valid.items():
        if method.path.endswith(suffix):
            return request
    return message_class(method.request)()


# --- payload generators ---


def random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 2, 5, 16, 64, 300]))


def mutated(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        action = rng.choice(["flip", "insert", "delete", "truncate"])
        if action == "flip" and out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif action == "insert":
            at = rng.randint(0, len(out))
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif action == "delete" and out:
            at = rng.randrange(len(out))
            del out[at : at + rng.randint(1, 4)]
        elif action == "truncate" and out:
            del out[rng.randrange(len(out)) :]
    return bytes(out)


def extreme(rng: random.Random, message: Message, depth: int = 0) -> Message:
    """`message` with some fields set to extreme values, recursively (a few levels deep)."""
    for field in message.DESCRIPTOR.fields:
        # A foreign `project` is refused before anything else is looked at: change it rarely.
        if rng.random() < (0.9 if field.name == "project" else 0.4):
            continue
        if field.containing_oneof is not None and message.WhichOneof(field.containing_oneof.name):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(message, field.name)
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            # Many entries only where they stay flat: nested ones multiply at every level.
            many = 70 if value_field.message_type is None else 3
            for _ in range(rng.choice([1, 2, many])):
                key = scalar(rng, key_field)
                if value_field.message_type is not None:
                    if depth < 5:
                        extreme(rng, target[key], depth + 1)
                else:
                    target[key] = scalar(rng, value_field)
            continue
        if field.is_repeated:
            target = getattr(message, field.name)
            many = 300 if field.message_type is None else (40 if depth == 0 else 3)
            for _ in range(rng.choice([1, 2, 3, many])):
                if field.message_type is not None:
                    if depth < 5:
                        extreme(rng, target.add(), depth + 1)
                else:
                    target.append(scalar(rng, field))
            continue
        if field.message_type is not None:
            if depth < 6:
                extreme(rng, getattr(message, field.name), depth + 1)
                if field.message_type.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
                    sub = getattr(message, field.name)
                    sub.seconds = rng.choice([*INTS, 253_402_300_800, -62_135_596_801, 1_700_000_000])
                    sub.nanos = rng.choice([0, -1, 999_999_999, 1_000_000_000, 2**31 - 1])
            continue
        setattr(message, field.name, scalar(rng, field))
    return message


def scalar(rng: random.Random, field: pb_descriptor.FieldDescriptor) -> Any:
    kind = field.type
    if kind == Field.TYPE_STRING:
        return rng.choice(STRINGS)
    if kind == Field.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 3, 100]))
    if kind == Field.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (Field.TYPE_DOUBLE, Field.TYPE_FLOAT):
        value = rng.choice(FLOATS)
        return value if kind == Field.TYPE_DOUBLE or not math.isfinite(value) or abs(value) < 3e38 else 3e38
    low, high = INT_BOUNDS[kind]
    if kind == Field.TYPE_ENUM:
        return rng.choice([0, 1, 2, 3, 99, -1, low, high])
    return rng.choice([v for v in INTS if low <= v <= high] + [low, high])


def payloads(rng: random.Random, method: Method, base: Message) -> Iterator[tuple[str, list[bytes]]]:
    """(kind, messages) cases for one method: one message each, or a stream of several."""
    valid = base.SerializeToString()
    for _ in range(ITERATIONS):
        yield "random bytes", [random_bytes(rng)]
        yield "mutated", [mutated(rng, valid)]
        copy = type(base)()
        copy.CopyFrom(base)
        yield "extreme", [extreme(rng, copy).SerializeToString()]
        if method.client_streaming:
            makers: list[Callable[[], bytes]] = [
                lambda: random_bytes(rng),
                lambda: mutated(rng, valid),
                lambda: extreme(rng, type(base)()).SerializeToString(),
                lambda: valid,
            ]
            yield "stream", [rng.choice(makers)() for _ in range(rng.randint(1, 5))]


def call(channel: grpc.Channel, method: Method, messages: list[bytes]) -> tuple[grpc.StatusCode, str]:
    # Watch streams until the deadline by design; a short one keeps the run quick.
    timeout = 0.1 if method.path == "/grpc.health.v1.Health/Watch" else CALL_TIMEOUT
    try:
        if method.client_streaming and method.server_streaming:
            for _ in channel.stream_stream(method.path)(iter(messages), timeout=timeout):
                pass
        elif method.client_streaming:
            channel.stream_unary(method.path)(iter(messages), timeout=timeout)
        elif method.server_streaming:
            for _ in channel.unary_stream(method.path)(messages[0], timeout=timeout):
                pass
        else:
            channel.unary_unary(method.path)(messages[0], timeout=timeout)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def stop_within(loaded: Loaded, seconds: float) -> bool:
    done = threading.Event()

    def stop() -> None:
        loaded.channel.close()
        loaded.app.stop(grace=SHUTDOWN_GRACE)
        done.set()

    threading.Thread(target=stop, name="fuzz-shutdown", daemon=True).start()
    return done.wait(seconds)


def test_fuzz_every_rpc(store_url: str, tmp_path: Path, embedder: Any) -> None:
    rng = random.Random(SEED)
    loaded = start_loaded(store_url, tmp_path / "data", embedder=embedder, max_text_chars=2_000)
    stopped = False
    try:
        methods = served_methods(loaded.channel)
        assert any(m.path.endswith("/SubmitFeedbackStream") for m in methods)
        valid = valid_requests(loaded)
        failures: list[str] = []
        for method in methods:
            base = base_request(method, valid)
            for number, (kind, messages) in enumerate(payloads(rng, method, base)):
                before = row_counts(loaded.db)
                code, details = call(loaded.channel, method, messages)
                case = f"{method.path} case {number} ({kind}, first bytes {messages[0][:24].hex()})"
                if code in CRASHES:
                    failures.append(f"{case}: {code.name}: {details[:300]}")
                after = row_counts(loaded.db)
                if code != grpc.StatusCode.OK and after != before:
                    changed = sorted(t for t in before if before[t] != after[t])
                    failures.append(f"{case}: refused with {code.name} but changed the tables {changed}")
        health = health_pb2_grpc.HealthStub(loaded.channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, f"seed {SEED}: health is {status}"
        assert not failures, f"seed {SEED}, {len(failures)} failures:\n" + "\n".join(failures[:40])
        stopped = True
        assert stop_within(loaded, SHUTDOWN_GRACE + 20), f"seed {SEED}: shutdown did not complete"
    finally:
        if not stopped:
            stop_within(loaded, SHUTDOWN_GRACE + 20)
