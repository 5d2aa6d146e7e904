"""issue_groups: TopIssues' groups keep one id from window to window

A group found by TopIssues is matched by centroid to the project's stored groups, so the same
complaint keeps its id, label and first-seen time across windows ("new this week" is a group
first seen in the window).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issue_groups",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("centroid", sa.LargeBinary(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_issue_groups_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_issue_groups")),
    )
    op.create_index("ix_issue_groups_project_seen", "issue_groups", ["project_id", "last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_issue_groups_project_seen", table_name="issue_groups")
    op.drop_table("issue_groups")
