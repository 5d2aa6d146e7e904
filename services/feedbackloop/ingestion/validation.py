"""Request validation: every problem in a request is reported at once, naming the field.

Validation turns a proto message into a plain, normalized record; nothing reaches the store
unless the whole request is valid.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from feedbackloop import fields
from feedbackloop.errors import Violations, quote
from feedbackloop.fields import MAX_ID_CHARS, MAX_KEY_CHARS, MAX_NAME_CHARS
from feedbackloop.v1 import common_pb2

MAX_SHORT_NAME_CHARS = 64  # a user role, a prompt version: their columns are 64 wide
MAX_CATEGORIES = 16
MAX_MESSAGES = 512
MAX_DOCUMENTS = 256
MESSAGE_ROLES = frozenset({"system", "user", "assistant", "tool"})
# Before this, a timestamp is a client bug (an unset clock, seconds taken for milliseconds).
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)

THUMBS = {common_pb2.THUMB_UNSPECIFIED: "", common_pb2.THUMB_UP: "up", common_pb2.THUMB_DOWN: "down"}
IMPLICITS = {
    common_pb2.IMPLICIT_SIGNAL_UNSPECIFIED: "",
    common_pb2.IMPLICIT_SIGNAL_REGENERATE: "regenerate",
    common_pb2.IMPLICIT_SIGNAL_COPY: "copy",
    common_pb2.IMPLICIT_SIGNAL_EDIT: "edit",
    common_pb2.IMPLICIT_SIGNAL_ABANDON: "abandon",
    common_pb2.IMPLICIT_SIGNAL_REPHRASE: "rephrase",
}
SOURCES = {
    common_pb2.FEEDBACK_SOURCE_UNSPECIFIED: "end_user",
    common_pb2.FEEDBACK_SOURCE_END_USER: "end_user",
    common_pb2.FEEDBACK_SOURCE_REVIEWER: "reviewer",
    common_pb2.FEEDBACK_SOURCE_EVALUATOR: "evaluator",
}
# Implicit signals whose meaning needs the text the user produced.
IMPLICIT_NEEDS_TEXT = frozenset({"edit", "rephrase"})


@dataclass(frozen=True)
class Limits:
    max_text_chars: int
    max_attributes: int
    max_future_skew: timedelta


@dataclass
class InteractionInput:
    session_id: str
    turn_index: int
    user_id: str
    user_role: str
    application: str
    prompt_name: str
    prompt_version: str
    model_name: str
    model_version: str
    model_parameters: dict[str, Any]
    input_messages: list[dict[str, str]]
    context_documents: list[dict[str, Any]]
    response: str
    latency_ms: int
    prompt_tokens: int
    completion_tokens: int
    attributes: dict[str, str]
    occurred_at: datetime
    payload_hash: str


@dataclass
class FeedbackInput:
    session_id: str
    interaction_id: str
    thumb: str
    rating: int | None
    categories: list[str]
    comment: str
    correction: str
    implicit: str
    implicit_text: str
    source: str
    user_id: str
    user_role: str
    model_confidence: float | None
    attributes: dict[str, str]
    occurred_at: datetime
    idempotency_key: str | None
    payload_hash: str
    # Name of the routing policy whose action produced this feedback (loop guard); "" for clients.
    origin_policy: str = ""
    # The OTLP span named instead of an interaction (lowercase hex), "" when none.
    span_trace_id: str = ""
    span_span_id: str = ""
    # How long it may wait for that span if it has not arrived (FEEDBACKLOOP_SPAN_LINK_WAIT_SECONDS,
    # set by the servicer); 0 refuses an unknown span with NOT_FOUND.
    span_wait_seconds: float = 0.0


def payload_hash(message: Message, *, clear: tuple[str, ...] = ()) -> str:
    """A stable digest of what the client sent, ignoring output-only fields."""
    if _sets_any(message, clear):
        copy = type(message)()
        copy.CopyFrom(message)
        for name in clear:
            copy.ClearField(name)
        message = copy
    # Else nothing to clear (clients rarely send output fields): the message serializes as
    # its cleared copy would, without the copy.
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


def _sets_any(message: Message, names: tuple[str, ...]) -> bool:
    """Whether any of these fields would be serialized (is present, or not at its default)."""
    for name, presence in _presence(message.DESCRIPTOR, names):
        if message.HasField(name) if presence else getattr(message, name):
            return True
    return False


@cache
def _presence(descriptor: Descriptor, names: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    """Each field and whether it tracks presence (else it is set when not empty or zero)."""
    out = []
    for name in names:
        field = descriptor.fields_by_name[name]
        if field.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
            # -0.0 is serialized though it reads as false: no shortcut for floats.
            raise NotImplementedError(f"payload_hash cannot clear the float field {name}")
        out.append((name, field.has_presence))
    return tuple(out)


_text = fields.text


def _id(v: Violations, path: str, value: str, *, required: bool = False, limit: int = MAX_ID_CHARS) -> str:
    return fields.identifier(v, path, value, required=required, limit=limit)


def _name(v: Violations, path: str, value: str, limit: int = MAX_NAME_CHARS) -> str:
    return fields.identifier(v, path, value, limit=limit)


def _timestamp(v: Violations, path: str, msg: Any, has: bool, now: datetime, limits: Limits) -> datetime:
    if not has:
        return now
    when = fields.timestamp(v, path, msg)
    if when is None:
        return now
    if when > now + limits.max_future_skew:
        v.add(
            path,
            f"is {when.isoformat()}, more than {int(limits.max_future_skew.total_seconds())}s in the future",
        )
    elif when < EARLIEST_TIMESTAMP:
        v.add(path, f"is {when.isoformat()}, before {EARLIEST_TIMESTAMP.date().isoformat()}")
    return when


def _attributes(v: Violations, path: str, attributes: Any, limits: Limits) -> dict[str, str]:
    result = dict(attributes)
    if len(result) > limits.max_attributes:
        v.add(path, f"has {len(result)} entries; the limit is {limits.max_attributes}")
    for key, value in result.items():
        if not key or len(key) > MAX_NAME_CHARS:
            v.add(_item(path, key), f"key must be 1 to {MAX_NAME_CHARS} characters")
        elif fields.first_control(key) is not None:
            v.add(_item(path, key), "key must not contain control characters")
        if len(value) > limits.max_text_chars:
            v.add(
                _item(path, key),
                f"value is {len(value)} characters long; the limit is {limits.max_text_chars}",
            )
        elif "\x00" in value:
            v.add(_item(path, key), "value must not contain NUL characters (U+0000)")
    return result


def _item(path: str, key: str) -> str:
    # Only for a violation: quoting every key of every record showed in the ingest profile.
    return f"{path}[{quote(key)!r}]"


def _non_negative(v: Violations, path: str, value: int) -> int:
    if value < 0:
        v.add(path, f"must not be negative (got {value})")
    return value


def validate_interaction(
    msg: common_pb2.Interaction, limits: Limits, now: datetime, *, prefix: str = "interaction"
) -> InteractionInput:
    v = Violations()
    p = prefix
    session_id = _id(v, f"{p}.session_id", msg.session_id, required=True)
    turn_index = _non_negative(v, f"{p}.turn_index", msg.turn_index)
    messages = []
    if len(msg.input_messages) > MAX_MESSAGES:
        v.add(f"{p}.input_messages", f"has {len(msg.input_messages)} messages; the limit is {MAX_MESSAGES}")
    for i, m in enumerate(msg.input_messages):
        role, content = m.role, m.content  # each read of a proto field makes a new str
        if role not in MESSAGE_ROLES:
            v.add(f"{p}.input_messages[{i}].role", f"must be one of {', '.join(sorted(MESSAGE_ROLES))}")
        _text(v, f"{p}.input_messages[{i}].content", content, limits.max_text_chars)
        messages.append({"role": role, "content": content})
    documents: list[dict[str, Any]] = []
    if len(msg.context_documents) > MAX_DOCUMENTS:
        v.add(
            f"{p}.context_documents",
            f"has {len(msg.context_documents)} documents; the limit is {MAX_DOCUMENTS}",
        )
    for i, d in enumerate(msg.context_documents):
        _id(v, f"{p}.context_documents[{i}].id", d.id)
        _text(v, f"{p}.context_documents[{i}].text", d.text, limits.max_text_chars)
        if not math.isfinite(d.score):
            v.add(f"{p}.context_documents[{i}].score", "must be a finite number")
        documents.append({"id": d.id, "text": d.text, "score": d.score})
    result = InteractionInput(
        session_id=session_id,
        turn_index=turn_index,
        user_id=_id(v, f"{p}.user.id", msg.user.id),
        user_role=_name(v, f"{p}.user.role", msg.user.role, MAX_SHORT_NAME_CHARS),
        application=_name(v, f"{p}.application", msg.application),
        prompt_name=_name(v, f"{p}.prompt.name", msg.prompt.name),
        prompt_version=_name(v, f"{p}.prompt.version", msg.prompt.version, MAX_SHORT_NAME_CHARS),
        model_name=_name(v, f"{p}.model.name", msg.model.name),
        model_version=_name(v, f"{p}.model.version", msg.model.version),
        model_parameters=fields.struct_json(v, f"{p}.model.parameters", msg.model.parameters),
        input_messages=messages,
        context_documents=documents,
        response=_text(v, f"{p}.response", msg.response, limits.max_text_chars),
        latency_ms=_non_negative(v, f"{p}.latency_ms", msg.latency_ms),
        prompt_tokens=_non_negative(v, f"{p}.prompt_tokens", msg.prompt_tokens),
        completion_tokens=_non_negative(v, f"{p}.completion_tokens", msg.completion_tokens),
        attributes=_attributes(v, f"{p}.attributes", msg.attributes, limits),
        occurred_at=_timestamp(
            v, f"{p}.occurred_at", msg.occurred_at, msg.HasField("occurred_at"), now, limits
        ),
        payload_hash=payload_hash(msg, clear=("id", "received_at", "trace_id", "span_id")),
    )
    v.raise_if_any()
    return result


def validate_feedback(
    msg: common_pb2.Feedback,
    limits: Limits,
    now: datetime,
    allowed_categories: frozenset[str],
    *,
    prefix: str = "feedback",
) -> FeedbackInput:
    v = Violations()
    p = prefix
    span_trace_id, span_span_id = _span_ref(v, f"{p}.span", msg)
    if msg.HasField("span"):
        if msg.interaction_id:
            v.add(f"{p}.interaction_id", "must be empty when span is set (name the interaction one way)")
        if msg.session_id:
            v.add(
                f"{p}.session_id",
                "must be empty when span is set (the span's interaction decides the session)",
            )
    elif not msg.session_id and not msg.interaction_id:
        v.add(f"{p}.session_id", "is required when interaction_id is empty")
    _id(v, f"{p}.session_id", msg.session_id)
    _id(v, f"{p}.interaction_id", msg.interaction_id)

    thumb = THUMBS.get(msg.thumb)
    if thumb is None:
        v.add(f"{p}.thumb", f"unknown value {msg.thumb}")
    rating = msg.rating if msg.HasField("rating") else None
    if rating is not None and not 1 <= rating <= 5:
        v.add(f"{p}.rating", f"must be between 1 and 5 (got {rating})")
    categories = list(msg.categories)
    if len(categories) > MAX_CATEGORIES:
        v.add(f"{p}.categories", f"has {len(categories)} entries; the limit is {MAX_CATEGORIES}")
    seen: set[str] = set()
    for i, category in enumerate(categories):
        if category in seen:
            v.add(f"{p}.categories[{i}]", f"duplicate category '{quote(category)}'")
        elif category not in allowed_categories:
            known = ", ".join(sorted(allowed_categories)) or "none"
            v.add(
                f"{p}.categories[{i}]",
                f"unknown category '{quote(category)}' (the taxonomy in force has: {known})",
            )
        seen.add(category)
    implicit = IMPLICITS.get(msg.implicit_signal)
    if implicit is None:
        v.add(f"{p}.implicit_signal", f"unknown value {msg.implicit_signal}")
    if implicit in IMPLICIT_NEEDS_TEXT and not msg.implicit_text.strip():
        v.add(f"{p}.implicit_text", f"is required for implicit signal '{implicit}'")
    if msg.implicit_text and implicit not in IMPLICIT_NEEDS_TEXT:
        v.add(f"{p}.implicit_text", "is only allowed with implicit_signal EDIT or REPHRASE")
    source = SOURCES.get(msg.source)
    if source is None:
        v.add(f"{p}.source", f"unknown value {msg.source}")
    confidence = msg.model_confidence if msg.HasField("model_confidence") else None
    if confidence is not None and not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        v.add(f"{p}.model_confidence", f"must be between 0 and 1 (got {confidence})")
    has_signal = bool(
        thumb or rating is not None or categories or msg.comment.strip() or msg.correction.strip() or implicit
    )
    if not has_signal:
        v.add(
            p,
            "carries no signal: set at least one of thumb, rating, categories, comment, correction, implicit_signal",
        )
    key = msg.idempotency_key
    _id(v, f"{p}.idempotency_key", key, limit=MAX_KEY_CHARS)
    result = FeedbackInput(
        session_id=msg.session_id,
        interaction_id=msg.interaction_id,
        thumb=thumb or "",
        rating=rating,
        categories=categories,
        comment=_text(v, f"{p}.comment", msg.comment, limits.max_text_chars),
        correction=_text(v, f"{p}.correction", msg.correction, limits.max_text_chars),
        implicit=implicit or "",
        implicit_text=_text(v, f"{p}.implicit_text", msg.implicit_text, limits.max_text_chars),
        source=source or "end_user",
        user_id=_id(v, f"{p}.user.id", msg.user.id),
        user_role=_name(v, f"{p}.user.role", msg.user.role, MAX_SHORT_NAME_CHARS),
        model_confidence=confidence,
        attributes=_attributes(v, f"{p}.attributes", msg.attributes, limits),
        occurred_at=_timestamp(
            v, f"{p}.occurred_at", msg.occurred_at, msg.HasField("occurred_at"), now, limits
        ),
        idempotency_key=key or None,
        payload_hash=payload_hash(msg, clear=("id", "received_at", "trace_id", "span_link")),
        span_trace_id=span_trace_id,
        span_span_id=span_span_id,
    )
    v.raise_if_any()
    return result


def hex_id(v: Violations, path: str, value: str, digits: int) -> str:
    """A W3C trace context id: `digits` hex digits, not all zero; lowercased."""
    if len(value) != digits or any(c not in "0123456789abcdefABCDEF" for c in value):
        v.add(path, f"must be {digits} hex digits (got '{quote(value)}')")
        return ""
    if set(value) == {"0"}:
        v.add(path, "must not be all zeros (an invalid id in W3C trace context)")
        return ""
    return value.lower()


def _span_ref(v: Violations, path: str, msg: common_pb2.Feedback) -> tuple[str, str]:
    if not msg.HasField("span"):
        return "", ""
    trace_id = hex_id(v, f"{path}.trace_id", msg.span.trace_id, 32)
    span_id = hex_id(v, f"{path}.span_id", msg.span.span_id, 16)
    if not (trace_id and span_id):
        return "", ""
    return trace_id, span_id


MAX_FILTER_VALUES = 256  # values per list field of a filter (each becomes a bound SQL parameter)
_FILTER_NAME_LISTS = ("categories", "model_versions", "prompt_names", "user_roles")


def filter_bounds(
    v: Violations, message: common_pb2.FeedbackFilter, prefix: str
) -> tuple[datetime | None, datetime | None]:
    """Check a FeedbackFilter's time range and its lists of names; its (start, end).

    The list values become SQL parameters and Milvus literals: each is checked as a name, and a
    list is bounded (SQLite refuses a statement with more than 32,766 parameters).
    """
    start = end = None
    if message.HasField("time_range"):
        window = message.time_range
        if window.HasField("start"):
            start = fields.timestamp(v, f"{prefix}.time_range.start", window.start)
        if window.HasField("end"):
            end = fields.timestamp(v, f"{prefix}.time_range.end", window.end)
        if start is not None and end is not None and end <= start:
            v.add(f"{prefix}.time_range", "end must be after start")
    for name in _FILTER_NAME_LISTS:
        values = getattr(message, name)
        if len(values) > MAX_FILTER_VALUES:
            v.add(f"{prefix}.{name}", f"has {len(values)} values; the limit is {MAX_FILTER_VALUES}")
            continue
        for i, value in enumerate(values):
            fields.identifier(v, f"{prefix}.{name}[{i}]", value, required=True, limit=MAX_NAME_CHARS)
    for name in ("signals", "sources"):
        if len(getattr(message, name)) > MAX_FILTER_VALUES:
            v.add(
                f"{prefix}.{name}",
                f"has {len(getattr(message, name))} values; the limit is {MAX_FILTER_VALUES}",
            )
    fields.identifier(v, f"{prefix}.session_id", message.session_id)
    return start, end
