"""feedback: the session index also covers occurred_at

A policy event counts the feedback of its session up to its own time (`session.feedback_count`,
`negative_count`). With (project_id, session_id) alone, SQLite's planner preferred the
(project_id, occurred_at) index for that query and walked the project's whole history before
the event, once per routed event and once per aggregate neighbour. With occurred_at as the
index's third column the equality on the session and the range on time use one index.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_feedback_project_session", table_name="feedback")
    op.create_index(
        "ix_feedback_project_session_occurred", "feedback", ["project_id", "session_id", "occurred_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_feedback_project_session_occurred", table_name="feedback")
    op.create_index("ix_feedback_project_session", "feedback", ["project_id", "session_id"])
