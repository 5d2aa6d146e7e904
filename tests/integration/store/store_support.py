"""Rows for store-level tests, inserted straight through SQLAlchemy (imported by name)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from feedbackloop.store.models import utcnow

T0 = utcnow() - timedelta(hours=1)


def interaction_row(project: str, session: str, turn: int) -> dict[str, Any]:
    return dict(
        id=f"int_{project}_{session}_{turn}",
        project_id=project,
        session_id=session,
        turn_index=turn,
        payload_hash="x",
        occurred_at=T0,
        received_at=T0,
        model_parameters={},
        input_messages=[],
        context_documents=[],
        attributes={},
    )


def feedback_row(project: str, fid: str, session: str, minute: int, **fields: Any) -> dict[str, Any]:
    """Feedback on turn 0 of `session`, `minute` minutes after T0."""
    return dict(
        id=fid,
        project_id=project,
        session_id=session,
        interaction_id=f"int_{project}_{session}_0",
        source="end_user",
        payload_hash=fid,
        attributes={},
        occurred_at=T0 + timedelta(minutes=minute),
        received_at=T0,
        **fields,
    )
