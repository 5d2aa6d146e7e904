"""The event shape that CEL conditions and aggregates see.

Every key is always present (empty values for absent data) so a condition never fails
on a missing key: `feedback.comment != ""` is safe, while a missing key would be a CEL
"no such key" runtime error. This module is the single list of field names; the validator
uses it to reject `feedback.commnet` at validate time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

FEEDBACK_DEFAULTS: dict[str, Any] = {
    "id": "",
    "session_id": "",
    "interaction_id": "",
    "thumb": "",
    "rating": 0,
    "categories": [],
    "comment": "",
    "correction": "",
    "implicit": "",
    "implicit_text": "",
    "source": "end_user",
    "user_id": "",
    "user_role": "",
    "model_confidence": -1.0,
    "attributes": {},
    "occurred_at": "",
    "signals": [],
    "negative": False,
    "origin_policy": "",
}

INTERACTION_DEFAULTS: dict[str, Any] = {
    "id": "",
    "session_id": "",
    "turn_index": 0,
    "user_id": "",
    "user_role": "",
    "application": "",
    "prompt_name": "",
    "prompt_version": "",
    "model_name": "",
    "model_version": "",
    "input_messages": [],
    "context_documents": [],
    "response": "",
    "latency_ms": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "attributes": {},
}

SESSION_DEFAULTS: dict[str, Any] = {"id": "", "turn_count": 0, "feedback_count": 0, "negative_count": 0}

EVENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "feedback": FEEDBACK_DEFAULTS,
    "interaction": INTERACTION_DEFAULTS,
    "session": SESSION_DEFAULTS,
}
TOP_LEVEL_VARIABLES: frozenset[str] = frozenset(EVENT_DEFAULTS)


def field_value(event: Mapping[str, Any], path: str) -> str:
    """The value at "var.name" (e.g. "interaction.prompt_name") as text, "" when absent."""
    var, _, name = path.partition(".")
    return str((event.get(var) or {}).get(name, ""))


class EventError(ValueError):
    """A partial event with a key that does not exist (a typo in a test case or a caller bug)."""


def make_event(partial: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Merge a partial event over the defaults; unknown keys raise EventError.

    Deep-copies the defaults so callers may mutate the result; this is for building events
    (server, tests), not for the evaluation hot path.
    """
    partial = partial or {}
    unknown_top = sorted(set(partial) - TOP_LEVEL_VARIABLES)
    if unknown_top:
        raise EventError(f"unknown event section(s): {', '.join(unknown_top)}")
    event: dict[str, dict[str, Any]] = {}
    for var, defaults in EVENT_DEFAULTS.items():
        given = partial.get(var) or {}
        if not isinstance(given, Mapping):
            raise EventError(f"event section {var} must be a mapping")
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise EventError(f"unknown field(s) in {var}: {', '.join(unknown)}")
        merged = copy.deepcopy(defaults)
        merged.update(copy.deepcopy(dict(given)))
        event[var] = merged
    return event


def sample_event() -> dict[str, dict[str, Any]]:
    """A fully populated event (every field non-empty) used to type-check conditions."""
    return make_event(
        {
            "feedback": {
                "id": "fb-sample",
                "session_id": "sess-sample",
                "interaction_id": "int-sample",
                "thumb": "down",
                "rating": 2,
                "categories": ["hallucination"],
                "comment": "sample comment",
                "correction": "sample correction",
                "implicit": "regenerate",
                "implicit_text": "sample text",
                "source": "end_user",
                "user_id": "user-sample",
                "user_role": "customer",
                "model_confidence": 0.5,
                "attributes": {"sample": "value"},
                "occurred_at": "2024-01-01T00:00:00Z",
                "signals": ["thumbs_down", "category", "comment"],
                "negative": True,
                "origin_policy": "",
            },
            "interaction": {
                "id": "int-sample",
                "session_id": "sess-sample",
                "turn_index": 1,
                "user_id": "user-sample",
                "user_role": "customer",
                "application": "sample-app",
                "prompt_name": "sample-prompt",
                "prompt_version": "1",
                "model_name": "sample-model",
                "model_version": "2024-01-01",
                "input_messages": [{"role": "user", "content": "hello"}],
                "context_documents": [{"id": "doc-1", "text": "sample", "score": 0.5}],
                "response": "sample response",
                "latency_ms": 120,
                "prompt_tokens": 10,
                "completion_tokens": 20,
                "attributes": {"sample": "value"},
            },
            "session": {"id": "sess-sample", "turn_count": 2, "feedback_count": 1, "negative_count": 1},
        }
    )
