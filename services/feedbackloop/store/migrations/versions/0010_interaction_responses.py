"""interaction responses: the gen_ai.response.id of the LLM span each OTLP interaction came from

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "interaction_responses",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("response_id", sa.String(length=128), nullable=False),
        sa.Column("interaction_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["interaction_id"],
            ["interactions.id"],
            name=op.f("fk_interaction_responses_interaction_id_interactions"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_interaction_responses_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("project_id", "response_id", name=op.f("pk_interaction_responses")),
        sa.UniqueConstraint("interaction_id", name=op.f("uq_interaction_responses_interaction_id")),
    )


def downgrade() -> None:
    op.drop_table("interaction_responses")
