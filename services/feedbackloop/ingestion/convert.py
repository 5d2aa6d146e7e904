"""Stored rows to wire messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import struct_pb2, timestamp_pb2

from feedbackloop.ingestion.validation import IMPLICITS, SOURCES, THUMBS
from feedbackloop.store.models import Feedback, Interaction
from feedbackloop.v1 import common_pb2

_THUMB_ENUM = {name: value for value, name in THUMBS.items()}
_IMPLICIT_ENUM = {name: value for value, name in IMPLICITS.items()}
_SPAN_LINK_ENUM = {
    "": common_pb2.SPAN_LINK_STATE_UNSPECIFIED,
    "linked": common_pb2.SPAN_LINK_STATE_LINKED,
    "pending": common_pb2.SPAN_LINK_STATE_PENDING,
    "unlinked": common_pb2.SPAN_LINK_STATE_UNLINKED,
    "refused": common_pb2.SPAN_LINK_STATE_REFUSED,
}
_SOURCE_ENUM = {
    name: value for value, name in SOURCES.items() if value != common_pb2.FEEDBACK_SOURCE_UNSPECIFIED
}


def timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def interaction_to_proto(row: Interaction) -> common_pb2.Interaction:
    parameters = struct_pb2.Struct()
    parameters.update(row.model_parameters or {})
    return common_pb2.Interaction(
        id=row.id,
        session_id=row.session_id,
        turn_index=row.turn_index,
        user=common_pb2.User(id=row.user_id, role=row.user_role),
        application=row.application,
        prompt=common_pb2.PromptRef(name=row.prompt_name, version=row.prompt_version),
        model=common_pb2.ModelRef(name=row.model_name, version=row.model_version, parameters=parameters),
        input_messages=[common_pb2.ChatMessage(**m) for m in row.input_messages],
        context_documents=[common_pb2.ContextDocument(**d) for d in row.context_documents],
        response=row.response,
        latency_ms=row.latency_ms,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        attributes=row.attributes,
        occurred_at=timestamp(row.occurred_at),
        received_at=timestamp(row.received_at),
        trace_id=row.trace_id,
        span_id=row.span_id,
    )


def feedback_to_proto(row: Feedback) -> common_pb2.Feedback:
    message = common_pb2.Feedback(
        id=row.id,
        session_id=row.session_id,
        interaction_id=row.interaction_id or "",
        thumb=_THUMB_ENUM[row.thumb],
        categories=row.category_names,
        comment=row.comment,
        correction=row.correction,
        implicit_signal=_IMPLICIT_ENUM[row.implicit],
        implicit_text=row.implicit_text,
        source=_SOURCE_ENUM[row.source],
        user=common_pb2.User(id=row.user_id, role=row.user_role),
        occurred_at=timestamp(row.occurred_at),
        received_at=timestamp(row.received_at),
        attributes=row.attributes,
        idempotency_key=row.idempotency_key or "",
        trace_id=row.trace_id,
    )
    if row.span_trace_id:
        message.span.CopyFrom(common_pb2.SpanRef(trace_id=row.span_trace_id, span_id=row.span_span_id))
        message.span_link = _SPAN_LINK_ENUM[row.span_link]
    if row.rating is not None:
        message.rating = row.rating
    if row.model_confidence is not None:
        message.model_confidence = row.model_confidence
    return message
