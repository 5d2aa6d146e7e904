"""session statistics kept as counters; an index for fair job claims

A policy event reads `session.turn_count`, `feedback_count` and `negative_count`. They were
counted from the session's rows for every routed event (every earlier feedback loaded each
time), so routing slowed with the square of a session's size. Now `session_stats` holds the
running counts, updated by an atomic upsert in the transaction that stores each interaction or
feedback, and each feedback row keeps the values it was stored with (itself included), which
is what live routing, backtests and backfills read.

The backfill gives each stored feedback the counts in the order the store received it
(received_at, then occurred_at, then id within one batch) and the turns received up to it, with
the complaint rule of `feedbackloop.signals.is_negative` as it stood at this revision (copied
here so that the migration's result never depends on later code). It pages through feedback in
key order, so its memory stays bounded on a large store.

`ix_pipeline_jobs_project_claim` lets a claim find the projects with pending work and take
each one's oldest jobs, so one project's backlog does not delay the others.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import bisect
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHUNK = 2000
NEGATIVE_IMPLICIT = frozenset({"regenerate", "edit", "abandon", "rephrase"})
LOW_RATING = 2

feedback = sa.table(
    "feedback",
    sa.column("id"),
    sa.column("project_id"),
    sa.column("session_id"),
    sa.column("thumb"),
    sa.column("rating"),
    sa.column("correction"),
    sa.column("implicit"),
    sa.column("occurred_at"),
    sa.column("received_at"),
    sa.column("session_turn_count"),
    sa.column("session_feedback_count"),
    sa.column("session_negative_count"),
)
categories = sa.table("feedback_categories", sa.column("feedback_id"))
interactions = sa.table(
    "interactions", sa.column("project_id"), sa.column("session_id"), sa.column("received_at")
)


def upgrade() -> None:
    op.create_table(
        "session_stats",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("turn_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("feedback_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("negative_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_session_stats_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("project_id", "session_id", name=op.f("pk_session_stats")),
    )
    with op.batch_alter_table("feedback") as batch_op:
        for name in ("session_turn_count", "session_feedback_count", "session_negative_count"):
            batch_op.add_column(sa.Column(name, sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("pipeline_jobs") as batch_op:
        batch_op.create_index(
            "ix_pipeline_jobs_project_claim", ["status", "stage", "project_id", "id"], unique=False
        )
    connection = op.get_bind()
    _backfill_feedback(connection)
    _backfill_sessions(connection)


def downgrade() -> None:
    with op.batch_alter_table("pipeline_jobs") as batch_op:
        batch_op.drop_index("ix_pipeline_jobs_project_claim")
    with op.batch_alter_table("feedback") as batch_op:
        for name in ("session_negative_count", "session_feedback_count", "session_turn_count"):
            batch_op.drop_column(name)
    op.drop_table("session_stats")


def _negative(thumb: str, rating: int | None, correction: str, implicit: str, has_category: Any) -> bool:
    if thumb:
        return thumb == "down"
    if rating is not None:
        return rating <= LOW_RATING
    return bool((correction or "").strip() or implicit in NEGATIVE_IMPLICIT or has_category)


def _backfill_feedback(connection: sa.Connection) -> None:
    order = (
        feedback.c.project_id,
        feedback.c.session_id,
        feedback.c.received_at,
        feedback.c.occurred_at,
        feedback.c.id,
    )
    has_category = sa.exists().where(categories.c.feedback_id == feedback.c.id).label("has_category")
    query = sa.select(
        *order, feedback.c.thumb, feedback.c.rating, feedback.c.correction, feedback.c.implicit, has_category
    ).order_by(*order)
    update = (
        sa.update(feedback)
        .where(feedback.c.id == sa.bindparam("b_id"))
        .values(
            session_turn_count=sa.bindparam("b_turns"),
            session_feedback_count=sa.bindparam("b_count"),
            session_negative_count=sa.bindparam("b_negative"),
        )
    )
    after: tuple[Any, ...] | None = None
    current: tuple[str, str] | None = None
    count = negative = 0
    while True:
        stmt = query if after is None else query.where(sa.tuple_(*order) > sa.tuple_(*after))
        rows = connection.execute(stmt.limit(CHUNK)).all()
        if not rows:
            return
        turns = _turn_times(connection, {(r.project_id, r.session_id) for r in rows})
        params: list[dict[str, Any]] = []
        for row in rows:
            key = (row.project_id, row.session_id)
            if key != current:
                current, count, negative = key, 0, 0
            count += 1
            negative += _negative(row.thumb, row.rating, row.correction, row.implicit, row.has_category)
            params.append(
                {
                    "b_id": row.id,
                    "b_turns": bisect.bisect_right(turns.get(key, ()), row.received_at),
                    "b_count": count,
                    "b_negative": negative,
                }
            )
        connection.execute(update, params)
        last = rows[-1]
        after = (last.project_id, last.session_id, last.received_at, last.occurred_at, last.id)


def _turn_times(
    connection: sa.Connection, sessions: set[tuple[str, str]]
) -> dict[tuple[str, str], list[Any]]:
    """When each turn of these sessions was received, sorted: a feedback's turn count is the
    number received at or before it."""
    times: dict[tuple[str, str], list[Any]] = {}
    wanted = sorted(sessions)
    for start in range(0, len(wanted), 500):
        rows = connection.execute(
            sa.select(interactions.c.project_id, interactions.c.session_id, interactions.c.received_at).where(
                sa.tuple_(interactions.c.project_id, interactions.c.session_id).in_(
                    wanted[start : start + 500]
                )
            )
        )
        for project_id, session_id, received_at in rows:
            times.setdefault((project_id, session_id), []).append(received_at)
    for values in times.values():
        values.sort()
    return times


def _backfill_sessions(connection: sa.Connection) -> None:
    # The last feedback of a session carries its totals; counts are running, so max() finds them.
    connection.execute(
        sa.text(
            "INSERT INTO session_stats "
            "(project_id, session_id, turn_count, feedback_count, negative_count, updated_at) "
            "SELECT k.project_id, k.session_id, COALESCE(t.n, 0), COALESCE(f.n, 0), COALESCE(f.neg, 0), "
            "CURRENT_TIMESTAMP "
            "FROM (SELECT project_id, session_id FROM interactions "
            "      UNION SELECT project_id, session_id FROM feedback) AS k "
            "LEFT JOIN (SELECT project_id, session_id, COUNT(*) AS n FROM interactions "
            "           GROUP BY project_id, session_id) AS t "
            "  ON t.project_id = k.project_id AND t.session_id = k.session_id "
            "LEFT JOIN (SELECT project_id, session_id, COUNT(*) AS n, MAX(session_negative_count) AS neg "
            "           FROM feedback GROUP BY project_id, session_id) AS f "
            "  ON f.project_id = k.project_id AND f.session_id = k.session_id"
        )
    )
