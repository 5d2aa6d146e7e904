"""Feedback by id within one project, with what events and answers need loaded.

The project is checked on the returned rows, not in SQL: with `project_id = ? AND id IN (...)`
SQLite, until its statistics say otherwise, expects the project equality to pick about ten rows
and walks the project's index instead of looking the ids up, so every lookup would cost time in
proportion to the project's history. By primary key alone the plan is a key lookup per id on
both backends, and a row of another project is dropped here just the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from feedbackloop.store.models import Feedback


def feedback_by_ids(
    session: Session, project_id: str | None, feedback_ids: Sequence[str]
) -> dict[str, Feedback]:
    """The feedback of `project_id` among `feedback_ids` (categories and interaction loaded);
    None reads across projects (the pipeline's stages work on every project's jobs)."""
    if not feedback_ids:
        return {}
    rows = session.scalars(
        select(Feedback)
        .where(Feedback.id.in_(list(feedback_ids)))
        .options(selectinload(Feedback.categories), selectinload(Feedback.interaction))
    )
    return {row.id: row for row in rows if project_id is None or row.project_id == project_id}
