"""Build the CEL event (feedback + interaction + session stats) from stored rows.

The shape is the policy engine's (feedbackloop.policy.event): every key present, defaults
for absent data.

The session stats are the ones stored on the feedback row in the transaction that stored it
(`store.session_stats`): `session.feedback_count` and `session.negative_count` count the
session's feedback stored up to and including this one, in the order the store received them
(not by `occurred_at`: a late event with an old timestamp would otherwise change the counts of
every later one), and `session.turn_count` the session's interactions stored before it. So the
live pipeline, a retried step, a backtest and a backfill all see the same values for an event,
and building an event costs the same in a session of one event as in one of ten thousand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from feedbackloop.policy import make_event
from feedbackloop.signals import is_negative, signals_of
from feedbackloop.store.models import Feedback, Interaction


def feedback_section(fb: Feedback) -> dict[str, Any]:
    return {
        "id": fb.id,
        "session_id": fb.session_id,
        "interaction_id": fb.interaction_id or "",
        "thumb": fb.thumb,
        "rating": fb.rating if fb.rating is not None else 0,
        "categories": fb.category_names,
        "comment": fb.comment,
        "correction": fb.correction,
        "implicit": fb.implicit,
        "implicit_text": fb.implicit_text,
        "source": fb.source,
        "user_id": fb.user_id,
        "user_role": fb.user_role,
        "model_confidence": fb.model_confidence if fb.model_confidence is not None else -1.0,
        "attributes": dict(fb.attributes or {}),
        "occurred_at": fb.occurred_at.isoformat(),
        "signals": signals_of(fb),
        "negative": is_negative(fb),
        "origin_policy": fb.origin_policy,
    }


def interaction_section(it: Interaction | None) -> dict[str, Any]:
    if it is None:
        return {}
    return {
        "id": it.id,
        "session_id": it.session_id,
        "turn_index": it.turn_index,
        "user_id": it.user_id,
        "user_role": it.user_role,
        "application": it.application,
        "prompt_name": it.prompt_name,
        "prompt_version": it.prompt_version,
        "model_name": it.model_name,
        "model_version": it.model_version,
        "input_messages": list(it.input_messages or []),
        "context_documents": list(it.context_documents or []),
        "response": it.response,
        "latency_ms": it.latency_ms,
        "prompt_tokens": it.prompt_tokens,
        "completion_tokens": it.completion_tokens,
        "attributes": dict(it.attributes or {}),
    }


def session_section(fb: Feedback) -> dict[str, Any]:
    return {
        "id": fb.session_id,
        "turn_count": fb.session_turn_count,
        "feedback_count": fb.session_feedback_count,
        "negative_count": fb.session_negative_count,
    }


def event_of(fb: Feedback) -> dict[str, dict[str, Any]]:
    """The full event for one stored feedback, from its row (and its loaded interaction)."""
    return make_event(
        {
            "feedback": feedback_section(fb),
            "interaction": interaction_section(fb.interaction),
            "session": session_section(fb),
        }
    )


def build_event(session: Session, fb: Feedback) -> dict[str, dict[str, Any]]:
    """The full event for one stored feedback. `session` is the one `fb` was loaded in; the
    event needs no query of its own beyond the interaction, when that is not loaded yet."""
    return event_of(fb)


def build_events(session: Session, feedback: Sequence[Feedback]) -> dict[str, dict[str, dict[str, Any]]]:
    """Events for several stored feedback, by feedback id (backtests, aggregate neighbours)."""
    return {fb.id: event_of(fb) for fb in feedback}
