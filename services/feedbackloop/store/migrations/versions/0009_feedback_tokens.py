"""feedback tokens: presigned tokens that submit feedback on one interaction

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("interaction_id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["interaction_id"],
            ["interactions.id"],
            name=op.f("fk_feedback_tokens_interaction_id_interactions"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_feedback_tokens_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_feedback_tokens")),
    )
    op.create_index("ix_feedback_tokens_expires_at", "feedback_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_tokens_expires_at", table_name="feedback_tokens")
    op.drop_table("feedback_tokens")
