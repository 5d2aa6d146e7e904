"""`gen_ai.evaluation.result` events as feedback from an automated evaluator.

The event's score label gives the thumb when it is a word whose sense is plain (`pass`,
`correct`, `relevant` up; `fail`, `incorrect`, `hallucinated` down); a bare score says nothing
on its own (0.8 of what?), so it is kept as an attribute, with the name and the label, and
the explanation becomes the comment. An event with neither a known label nor an explanation
gets a comment naming the evaluation and its result, so it still carries a signal.
"""

from __future__ import annotations

from datetime import datetime

from feedbackloop.errors import FeedbackloopError
from feedbackloop.ingestion.validation import FeedbackInput, Limits, validate_feedback
from feedbackloop.otlp.attributes import as_text
from feedbackloop.otlp.mapping import Evaluation, SpanRefused
from feedbackloop.v1 import common_pb2

NAME = "gen_ai.evaluation.name"
SCORE = "gen_ai.evaluation.score.value"
LABEL = "gen_ai.evaluation.score.label"
EXPLANATION = "gen_ai.evaluation.explanation"
# Names the completion judged when the event cannot be parented to its span.
RESPONSE_ID = "gen_ai.response.id"

POSITIVE_LABELS = frozenset(
    {
        "pass",
        "passed",
        "correct",
        "relevant",
        "faithful",
        "grounded",
        "good",
        "positive",
        "yes",
        "true",
        "safe",
    }
)
NEGATIVE_LABELS = frozenset(
    {
        "fail",
        "failed",
        "incorrect",
        "not_relevant",
        "irrelevant",
        "unfaithful",
        "hallucinated",
        "hallucination",
        "ungrounded",
        "bad",
        "negative",
        "no",
        "false",
        "unsafe",
        "toxic",
    }
)


def idempotency_key(trace_id: str, span_id: str, index: int) -> str:
    """One key per event: a span exported again replays its evaluations, creating nothing."""
    return f"otlp-eval:{trace_id}:{span_id}:{index}"


def evaluation_feedback(
    event: Evaluation,
    *,
    trace_id: str,
    event_span_id: str,
    target_span_id: str,
    limits: Limits,
    now: datetime,
    categories: frozenset[str],
    target_trace_id: str | None = None,
) -> FeedbackInput:
    """The feedback an evaluation event gives the interaction of `target_span_id` (the span it
    is on, that span's parent, or the span of the response it names) in `target_trace_id`
    (the event's own trace unless given); SpanRefused says what is wrong with the event."""
    where = f"events[{event.index}] ({EVENT_NAME})"
    attributes = event.attributes
    name = attributes.get(NAME)
    if not isinstance(name, str) or not name.strip():
        raise SpanRefused(f"{where}: {NAME} is required")
    label = attributes.get(LABEL)
    label_text = label.strip().lower() if isinstance(label, str) else ""
    explanation = attributes.get(EXPLANATION)
    message = common_pb2.Feedback(
        span=common_pb2.SpanRef(trace_id=target_trace_id or trace_id, span_id=target_span_id),
        source=common_pb2.FEEDBACK_SOURCE_EVALUATOR,
        idempotency_key=idempotency_key(trace_id, event_span_id, event.index),
    )
    if label_text in POSITIVE_LABELS:
        message.thumb = common_pb2.THUMB_UP
    elif label_text in NEGATIVE_LABELS:
        message.thumb = common_pb2.THUMB_DOWN
    if isinstance(explanation, str) and explanation.strip():
        message.comment = explanation
    elif message.thumb == common_pb2.THUMB_UNSPECIFIED:
        result = label if isinstance(label, str) and label else as_text(attributes.get(SCORE, "no result"))
        message.comment = f"{name}: {result}"
    for key, value in attributes.items():
        if key != EXPLANATION and value is not None and len(message.attributes) < limits.max_attributes:
            message.attributes[key] = as_text(value)
    if event.time_unix_nano > 0:
        message.occurred_at.FromNanoseconds(event.time_unix_nano)
    try:
        return validate_feedback(message, limits, now, categories)
    except FeedbackloopError as error:
        reasons = "; ".join(f"{v.field}: {v.description}" for v in error.violations) or error.message
        raise SpanRefused(f"{where}: {reasons}") from None


EVENT_NAME = "gen_ai.evaluation.result"
