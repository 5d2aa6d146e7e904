"""Build the CEL event (feedback + interaction + session stats) from stored rows.

The shape is the policy engine's (feedbackloop.policy.event): every key present, defaults
for absent data. Session stats count what the store held at the feedback's own time
(occurred_at), so a backfill or backtest sees what the live pipeline saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

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


def build_event(session: Session, fb: Feedback) -> dict[str, dict[str, Any]]:
    """The full event for one stored feedback (session stats read from the store)."""
    return build_events(session, [fb])[fb.id]


def build_events(session: Session, feedback: Sequence[Feedback]) -> dict[str, dict[str, dict[str, Any]]]:
    """Events for several stored feedback of one project, by feedback id.

    Two queries for the whole batch (turns and feedback of the sessions involved) instead of two
    per feedback: an aggregate reads up to a hundred neighbours, a backtest thousands of events.
    """
    if not feedback:
        return {}
    project_ids = {fb.project_id for fb in feedback}
    if len(project_ids) != 1:
        raise ValueError(f"build_events takes feedback of one project, got {sorted(project_ids)}")
    project_id = project_ids.pop()
    session_ids = sorted({fb.session_id for fb in feedback})
    turn_counts: dict[str, int] = dict(
        session.execute(
            select(Interaction.session_id, func.count())
            .where(Interaction.project_id == project_id, Interaction.session_id.in_(session_ids))
            .group_by(Interaction.session_id)
        ).all()
    )
    latest = max(fb.occurred_at for fb in feedback)
    in_sessions: dict[str, list[Feedback]] = {}
    for row in session.scalars(
        select(Feedback)
        .where(
            Feedback.project_id == project_id,
            Feedback.session_id.in_(session_ids),
            Feedback.occurred_at <= latest,
        )
        .options(selectinload(Feedback.categories))
    ):
        in_sessions.setdefault(row.session_id, []).append(row)
    events: dict[str, dict[str, dict[str, Any]]] = {}
    for fb in feedback:
        earlier = [f for f in in_sessions.get(fb.session_id, ()) if f.occurred_at <= fb.occurred_at]
        events[fb.id] = make_event(
            {
                "feedback": feedback_section(fb),
                "interaction": interaction_section(fb.interaction),
                "session": {
                    "id": fb.session_id,
                    "turn_count": turn_counts.get(fb.session_id, 0),
                    "feedback_count": len(earlier),
                    "negative_count": sum(1 for f in earlier if is_negative(f)),
                },
            }
        )
    return events
