"""Rows for store-level tests, inserted straight through SQLAlchemy (imported by name)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import event

from feedbackloop.ingestion.validation import FeedbackInput, InteractionInput
from feedbackloop.store.db import Database
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


def selects_run_by(db: Database, call: Callable[[], Any]) -> list[tuple[str, Any]]:
    """(statement, parameters) of every SELECT that `call` runs on the read engine."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(db.read_engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(db.read_engine, "before_cursor_execute", capture)
    return statements


def query_plan(db: Database, statement: str, parameters: Any) -> str:
    """SQLite's query plan of one statement, its steps joined by spaces."""
    with db.read_engine.connect() as conn:
        return " ".join(
            str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        )


def interaction_input(session: str, turn: int) -> InteractionInput:
    """A minimal turn of `session`, as ingestion stores it (through the repository)."""
    return InteractionInput(
        session_id=session, turn_index=turn, user_id="u", user_role="customer", application="app",
        prompt_name="support-answer", prompt_version="1", model_name="m", model_version="v1",
        model_parameters={}, input_messages=[{"role": "user", "content": "How much is the Pro plan?"}],
        context_documents=[], response="It costs $10.", latency_ms=1, prompt_tokens=1, completion_tokens=1,
        attributes={}, occurred_at=T0, payload_hash=f"{session}/{turn}",
    )  # fmt: skip


def feedback_input(
    session: str, interaction_id: str = "", *, minute: int = 0, **fields: Any
) -> FeedbackInput:
    """A feedback event on `session` (or on one of its turns), `minute` minutes after T0."""
    values: dict[str, Any] = dict(
        session_id=session, interaction_id=interaction_id, thumb="", rating=None, categories=[],
        comment="", correction="", implicit="", implicit_text="", source="end_user", user_id="u",
        user_role="customer", model_confidence=None, attributes={},
        occurred_at=T0 + timedelta(minutes=minute), idempotency_key=None, payload_hash="",
    )  # fmt: skip
    values.update(fields)
    digest = hashlib.sha256(repr(sorted(values.items())).encode()).hexdigest()
    values["payload_hash"] = values["payload_hash"] or digest
    return FeedbackInput(**values)
