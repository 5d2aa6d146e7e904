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


def load_feedback(session: Session, project_id: str, feedback_ids: Sequence[str]) -> dict[str, Feedback]:
    rows = session.scalars(
        select(Feedback)
        .where(Feedback.project_id == project_id, Feedback.id.in_(list(feedback_ids)))
        .options(selectinload(Feedback.categories), selectinload(Feedback.interaction))
    )
    return {row.id: row for row in rows}


def build_event(session: Session, fb: Feedback) -> dict[str, dict[str, Any]]:
    """The full event for one stored feedback (session stats read from the store)."""
    turn_count = session.scalar(
        select(func.count())
        .select_from(Interaction)
        .where(Interaction.project_id == fb.project_id, Interaction.session_id == fb.session_id)
    )
    earlier = session.scalars(
        select(Feedback)
        .where(
            Feedback.project_id == fb.project_id,
            Feedback.session_id == fb.session_id,
            Feedback.occurred_at <= fb.occurred_at,
        )
        .options(selectinload(Feedback.categories))
    ).all()
    return make_event(
        {
            "feedback": feedback_section(fb),
            "interaction": interaction_section(fb.interaction),
            "session": {
                "id": fb.session_id,
                "turn_count": int(turn_count or 0),
                "feedback_count": len(earlier),
                "negative_count": sum(1 for f in earlier if is_negative(f)),
            },
        }
    )
