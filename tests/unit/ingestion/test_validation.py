"""validation.py: each rule, table-driven, with the exact violation it reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from feedbackloop.errors import InvalidArgument
from feedbackloop.ingestion.validation import (
    MAX_CATEGORIES,
    MAX_ID_CHARS,
    MAX_KEY_CHARS,
    Limits,
    payload_hash,
    validate_feedback,
    validate_interaction,
)
from feedbackloop.v1 import common_pb2 as S
from support import ts

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits(max_text_chars=20, max_attributes=2, max_future_skew=timedelta(seconds=300))
CATEGORIES = frozenset({"hallucination", "unsafe"})
NO_SIGNAL = (
    "carries no signal: set at least one of thumb, rating, categories, comment, correction, implicit_signal"
)


def violations(call: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as raised:
        call()
    return [(v.field, v.description) for v in raised.value.violations]


FEEDBACK_ERRORS: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    (
        "no target",
        {"thumb": S.THUMB_UP},
        [("feedback.session_id", "is required when interaction_id is empty")],
    ),
    ("no signal", {"session_id": "s"}, [("feedback", NO_SIGNAL)]),
    (
        "blank comment and correction",
        {"session_id": "s", "comment": " ", "correction": "\n"},
        [("feedback", NO_SIGNAL)],
    ),
    ("rating 0", {"session_id": "s", "rating": 0}, [("feedback.rating", "must be between 1 and 5 (got 0)")]),
    (
        "rating -3",
        {"session_id": "s", "rating": -3},
        [("feedback.rating", "must be between 1 and 5 (got -3)")],
    ),
    ("rating 6", {"session_id": "s", "rating": 6}, [("feedback.rating", "must be between 1 and 5 (got 6)")]),
    ("unknown thumb", {"session_id": "s", "thumb": 3, "rating": 1}, [("feedback.thumb", "unknown value 3")]),
    (
        "unknown implicit",
        {"session_id": "s", "implicit_signal": 42, "rating": 1},
        [("feedback.implicit_signal", "unknown value 42")],
    ),
    (
        "unknown source",
        {"session_id": "s", "source": 9, "rating": 1},
        [("feedback.source", "unknown value 9")],
    ),
    (
        "unknown category",
        {"session_id": "s", "categories": ["meh"]},
        [
            (
                "feedback.categories[0]",
                "unknown category 'meh' (the taxonomy in force has: hallucination, unsafe)",
            )
        ],
    ),
    (
        "duplicate category",
        {"session_id": "s", "categories": ["unsafe", "hallucination", "unsafe"]},
        [("feedback.categories[2]", "duplicate category 'unsafe'")],
    ),
    (
        "too many categories",
        {"session_id": "s", "categories": ["unsafe"] * 0 + [f"c{i}" for i in range(MAX_CATEGORIES + 1)]},
        [("feedback.categories", f"has {MAX_CATEGORIES + 1} entries; the limit is {MAX_CATEGORIES}")]
        + [
            (
                f"feedback.categories[{i}]",
                f"unknown category 'c{i}' (the taxonomy in force has: hallucination, unsafe)",
            )
            for i in range(MAX_CATEGORIES + 1)
        ],
    ),
    (
        "edit needs text",
        {"session_id": "s", "implicit_signal": S.IMPLICIT_SIGNAL_EDIT},
        [("feedback.implicit_text", "is required for implicit signal 'edit'")],
    ),
    (
        "rephrase needs text",
        {"session_id": "s", "implicit_signal": S.IMPLICIT_SIGNAL_REPHRASE, "implicit_text": " "},
        [("feedback.implicit_text", "is required for implicit signal 'rephrase'")],
    ),
    (
        "text without edit/rephrase",
        {"session_id": "s", "implicit_signal": S.IMPLICIT_SIGNAL_ABANDON, "implicit_text": "x"},
        [("feedback.implicit_text", "is only allowed with implicit_signal EDIT or REPHRASE")],
    ),
    (
        "text without any implicit signal",
        {"session_id": "s", "thumb": S.THUMB_UP, "implicit_text": "x"},
        [("feedback.implicit_text", "is only allowed with implicit_signal EDIT or REPHRASE")],
    ),
    (
        "confidence above 1",
        {"session_id": "s", "rating": 2, "model_confidence": 1.0001},
        [("feedback.model_confidence", "must be between 0 and 1 (got 1.0001)")],
    ),
    (
        "confidence infinite",
        {"session_id": "s", "rating": 2, "model_confidence": float("inf")},
        [("feedback.model_confidence", "must be between 0 and 1 (got inf)")],
    ),
    (
        "comment over the limit",
        {"session_id": "s", "comment": "c" * 21},
        [("feedback.comment", "is 21 characters long; the limit is 20")],
    ),
    (
        "correction over the limit",
        {"session_id": "s", "correction": "c" * 25},
        [("feedback.correction", "is 25 characters long; the limit is 20")],
    ),
    (
        "implicit text over the limit",
        {"session_id": "s", "implicit_signal": S.IMPLICIT_SIGNAL_EDIT, "implicit_text": "e" * 21},
        [("feedback.implicit_text", "is 21 characters long; the limit is 20")],
    ),
    (
        "session id too long",
        {"session_id": "s" * (MAX_ID_CHARS + 1), "rating": 1},
        [("feedback.session_id", f"is {MAX_ID_CHARS + 1} characters long; the limit is {MAX_ID_CHARS}")],
    ),
    (
        "idempotency key too long",
        {"session_id": "s", "rating": 1, "idempotency_key": "k" * (MAX_KEY_CHARS + 1)},
        [
            (
                "feedback.idempotency_key",
                f"is {MAX_KEY_CHARS + 1} characters long; the limit is {MAX_KEY_CHARS}",
            )
        ],
    ),
    (
        "too many attributes",
        {"session_id": "s", "rating": 1, "attributes": {"a": "1", "b": "2", "c": "3"}},
        [("feedback.attributes", "has 3 entries; the limit is 2")],
    ),
    (
        "empty attribute key",
        {"session_id": "s", "rating": 1, "attributes": {"": "1"}},
        [("feedback.attributes['']", "key must be 1 to 128 characters")],
    ),
    (
        "attribute value over the limit",
        {"session_id": "s", "rating": 1, "attributes": {"k": "v" * 21}},
        [("feedback.attributes['k']", "value is 21 characters long; the limit is 20")],
    ),
    (
        "occurred 301 s in the future",
        {"session_id": "s", "rating": 1, "occurred_at": ts(NOW + timedelta(seconds=301))},
        [("feedback.occurred_at", "is 2025-06-01T12:05:01+00:00, more than 300s in the future")],
    ),
    (
        "occurred before 2000",
        {"session_id": "s", "rating": 1, "occurred_at": ts(datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC))},
        [("feedback.occurred_at", "is 1999-12-31T23:59:59+00:00, before 2000-01-01")],
    ),
    (
        "everything reported at once, in field order",
        {"rating": 7, "model_confidence": -1.0, "comment": "x" * 30},
        [
            ("feedback.session_id", "is required when interaction_id is empty"),
            ("feedback.rating", "must be between 1 and 5 (got 7)"),
            ("feedback.model_confidence", "must be between 0 and 1 (got -1.0)"),
            ("feedback.comment", "is 30 characters long; the limit is 20"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in FEEDBACK_ERRORS], ids=[c[0] for c in FEEDBACK_ERRORS]
)
def test_feedback_violations(fields: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert violations(lambda: validate_feedback(S.Feedback(**fields), LIMITS, NOW, CATEGORIES)) == expected


def test_invalid_argument_message_joins_every_violation() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_feedback(S.Feedback(rating=9), LIMITS, NOW, CATEGORIES)
    assert raised.value.message == (
        "feedback.session_id: is required when interaction_id is empty; feedback.rating: must be between 1 and 5 (got 9)"
    )


def test_prefix_names_the_path_in_another_message() -> None:
    assert violations(
        lambda: validate_feedback(
            S.Feedback(session_id="s"), LIMITS, NOW, CATEGORIES, prefix="events[3].feedback"
        )
    ) == [("events[3].feedback", NO_SIGNAL)]


FEEDBACK_VALID: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("thumb up", {"session_id": "s", "thumb": S.THUMB_UP}, {"thumb": "up", "source": "end_user"}),
    ("thumb down", {"interaction_id": "int_1", "thumb": S.THUMB_DOWN}, {"thumb": "down", "session_id": ""}),
    ("rating edges", {"session_id": "s", "rating": 5}, {"rating": 5, "model_confidence": None}),
    ("rating unset is None", {"session_id": "s", "comment": "ok"}, {"rating": None, "comment": "ok"}),
    (
        "confidence 0 is kept",
        {"session_id": "s", "rating": 1, "model_confidence": 0.0},
        {"model_confidence": 0.0},
    ),
    (
        "categories keep order",
        {"session_id": "s", "categories": ["unsafe", "hallucination"]},
        {"categories": ["unsafe", "hallucination"]},
    ),
    (
        "regenerate",
        {"session_id": "s", "implicit_signal": S.IMPLICIT_SIGNAL_REGENERATE},
        {"implicit": "regenerate"},
    ),
    ("copy", {"session_id": "s", "implicit_signal": S.IMPLICIT_SIGNAL_COPY}, {"implicit": "copy"}),
    ("abandon", {"session_id": "s", "implicit_signal": S.IMPLICIT_SIGNAL_ABANDON}, {"implicit": "abandon"}),
    (
        "edit with text",
        {"session_id": "s", "implicit_signal": S.IMPLICIT_SIGNAL_EDIT, "implicit_text": "new"},
        {"implicit": "edit", "implicit_text": "new"},
    ),
    (
        "reviewer",
        {"session_id": "s", "rating": 3, "source": S.FEEDBACK_SOURCE_REVIEWER},
        {"source": "reviewer"},
    ),
    (
        "evaluator",
        {"session_id": "s", "rating": 3, "source": S.FEEDBACK_SOURCE_EVALUATOR},
        {"source": "evaluator"},
    ),
    ("empty key is None", {"session_id": "s", "rating": 3}, {"idempotency_key": None}),
    ("key kept", {"session_id": "s", "rating": 3, "idempotency_key": "k"}, {"idempotency_key": "k"}),
    ("unset time is now", {"session_id": "s", "rating": 3}, {"occurred_at": NOW}),
    (
        "300 s ahead is allowed",
        {"session_id": "s", "rating": 3, "occurred_at": ts(NOW + timedelta(seconds=300))},
        {"occurred_at": NOW + timedelta(seconds=300)},
    ),
    (
        "2000-01-01 is allowed",
        {"session_id": "s", "rating": 3, "occurred_at": ts(datetime(2000, 1, 1, tzinfo=UTC))},
        {"occurred_at": datetime(2000, 1, 1, tzinfo=UTC)},
    ),
    ("text at the limit", {"session_id": "s", "comment": "c" * 20}, {"comment": "c" * 20}),
    (
        "attributes",
        {"session_id": "s", "rating": 3, "attributes": {"a": "1", "b": "2"}},
        {"attributes": {"a": "1", "b": "2"}},
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in FEEDBACK_VALID], ids=[c[0] for c in FEEDBACK_VALID]
)
def test_valid_feedback_normalizes(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    result = validate_feedback(S.Feedback(**fields), LIMITS, NOW, CATEGORIES)
    for name, value in expected.items():
        assert getattr(result, name) == value, name


def test_payload_hash_ignores_output_only_fields_only() -> None:
    base = S.Feedback(session_id="s", rating=3, idempotency_key="k")
    with_outputs = S.Feedback(session_id="s", rating=3, idempotency_key="k", id="fb_1", trace_id="t" * 32)
    with_outputs.received_at.GetCurrentTime()
    digest = validate_feedback(base, LIMITS, NOW, CATEGORIES).payload_hash
    assert validate_feedback(with_outputs, LIMITS, NOW, CATEGORIES).payload_hash == digest
    changed = S.Feedback(session_id="s", rating=4, idempotency_key="k")
    assert validate_feedback(changed, LIMITS, NOW, CATEGORIES).payload_hash != digest
    # Map order does not change the digest (deterministic serialization).
    a = S.Feedback(session_id="s", rating=3, attributes={"x": "1", "y": "2"})
    b = S.Feedback(session_id="s", rating=3)
    b.attributes["y"] = "2"
    b.attributes["x"] = "1"
    assert payload_hash(a) == payload_hash(b)


def test_an_interaction_digest_ignores_each_output_field_alone_and_sees_every_input() -> None:
    """The digest is the same with any one output-only field sent or not (each one alone takes
    the path that clears a copy), and still moves with a change of input."""
    base = S.Interaction(
        session_id="s", response="r", input_messages=[S.ChatMessage(role="user", content="q")]
    )
    digest = validate_interaction(base, LIMITS, NOW).payload_hash
    for name, value in (("id", "int_1"), ("trace_id", "a" * 32), ("span_id", "b" * 16)):
        sent = S.Interaction()
        sent.CopyFrom(base)
        setattr(sent, name, value)
        assert validate_interaction(sent, LIMITS, NOW).payload_hash == digest, name
    sent = S.Interaction()
    sent.CopyFrom(base)
    sent.received_at.SetInParent()  # present at its zero value: still an output field
    assert validate_interaction(sent, LIMITS, NOW).payload_hash == digest
    changes: list[tuple[str, Any]] = [("response", "r2"), ("turn_index", 1), ("session_id", "s2")]
    for field, changed in changes:
        other = S.Interaction()
        other.CopyFrom(base)
        setattr(other, field, changed)
        assert validate_interaction(other, LIMITS, NOW).payload_hash != digest, field
    linked = S.Feedback(session_id="s", rating=3, span_link=S.SPAN_LINK_STATE_LINKED)
    assert payload_hash(linked, clear=("span_link",)) == payload_hash(S.Feedback(session_id="s", rating=3))
    assert payload_hash(linked) != payload_hash(S.Feedback(session_id="s", rating=3))


INTERACTION_ERRORS: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    ("no session", {"turn_index": 0}, [("interaction.session_id", "is required")]),
    ("blank session", {"session_id": "  "}, [("interaction.session_id", "is required")]),
    (
        "negative turn",
        {"session_id": "s", "turn_index": -2},
        [("interaction.turn_index", "must not be negative (got -2)")],
    ),
    (
        "negative counters",
        {"session_id": "s", "latency_ms": -1, "prompt_tokens": -2, "completion_tokens": -3},
        [
            ("interaction.latency_ms", "must not be negative (got -1)"),
            ("interaction.prompt_tokens", "must not be negative (got -2)"),
            ("interaction.completion_tokens", "must not be negative (got -3)"),
        ],
    ),
    (
        "bad message role",
        {"session_id": "s", "input_messages": [S.ChatMessage(role="user"), S.ChatMessage(role="human")]},
        [("interaction.input_messages[1].role", "must be one of assistant, system, tool, user")],
    ),
    (
        "message content over the limit",
        {"session_id": "s", "input_messages": [S.ChatMessage(role="user", content="m" * 21)]},
        [("interaction.input_messages[0].content", "is 21 characters long; the limit is 20")],
    ),
    (
        "document score NaN",
        {"session_id": "s", "context_documents": [S.ContextDocument(id="d", score=float("nan"))]},
        [("interaction.context_documents[0].score", "must be a finite number")],
    ),
    (
        "response over the limit",
        {"session_id": "s", "response": "r" * 21},
        [("interaction.response", "is 21 characters long; the limit is 20")],
    ),
    (
        "model name too long",
        {"session_id": "s", "model": S.ModelRef(name="n" * 129)},
        [("interaction.model.name", "is 129 characters long; the limit is 128")],
    ),
    (
        "occurred in the future",
        {"session_id": "s", "occurred_at": ts(NOW + timedelta(days=1))},
        [("interaction.occurred_at", "is 2025-06-02T12:00:00+00:00, more than 300s in the future")],
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in INTERACTION_ERRORS], ids=[c[0] for c in INTERACTION_ERRORS]
)
def test_interaction_violations(fields: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert violations(lambda: validate_interaction(S.Interaction(**fields), LIMITS, NOW)) == expected


def test_valid_interaction_normalizes() -> None:
    message = S.Interaction(
        session_id="s",
        turn_index=2,
        user=S.User(id="u", role="customer"),
        model=S.ModelRef(name="m", version="v"),
        input_messages=[S.ChatMessage(role="user", content="hi")],
        context_documents=[S.ContextDocument(id="d", text="t", score=0.5)],
    )
    message.model.parameters.update({"temperature": 0.1})
    result = validate_interaction(message, LIMITS, NOW)
    assert (result.session_id, result.turn_index, result.user_role) == ("s", 2, "customer")
    assert result.input_messages == [{"role": "user", "content": "hi"}]
    assert result.context_documents == [{"id": "d", "text": "t", "score": 0.5}]
    assert result.model_parameters == {"temperature": 0.1}
    assert result.occurred_at == NOW
    assert len(result.payload_hash) == 64
