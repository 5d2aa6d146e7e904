"""Feedback by id within one project, with what events and answers need loaded.

The project is checked on the returned rows, not in SQL: with `project_id = ? AND id IN (...)`
SQLite, until its statistics say otherwise, expects the project equality to pick about ten rows
and walks the project's index instead of looking the ids up, so every lookup would cost time in
proportion to the project's history. By primary key alone the plan is a key lookup per id on
both backends, and a row of another project is dropped here just the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from feedbackloop.store.models import Feedback, FeedbackCategory


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


# Ids per IN list: well under SQLite's limit on bound variables, and short statements for both.
ID_CHUNK = 5000


def chunks(ids: Sequence[str], size: int = ID_CHUNK) -> Iterator[Sequence[str]]:
    """`ids` in runs of at most `size`, one per IN list."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def categories_by_ids(session: Session, project_id: str, feedback_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each listed feedback's categories in picked order, without loading the feedback rows
    (TopIssues counts the categories of every member but shows only the representatives)."""
    out: dict[str, list[str]] = {}
    ids = list(dict.fromkeys(feedback_ids))
    for chunk in chunks(ids):
        rows = session.execute(
            select(FeedbackCategory.feedback_id, FeedbackCategory.category, Feedback.project_id)
            .join(Feedback, Feedback.id == FeedbackCategory.feedback_id)
            .where(FeedbackCategory.feedback_id.in_(chunk))
            .order_by(FeedbackCategory.feedback_id, FeedbackCategory.position)
        )
        for feedback_id, category, project in rows:
            if project == project_id:
                out.setdefault(feedback_id, []).append(category)
    return out
