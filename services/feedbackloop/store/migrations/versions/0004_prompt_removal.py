"""prompts: remember the policy revision that removed a prompt

A policy set that no longer defines a Prompt destroys it (the plan shows `- prompt`), so the
prompt must stop being served; its versions and patches stay as history, and a later set that
defines it again (or a rollback) serves it again.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prompts") as batch_op:
        batch_op.add_column(sa.Column("removed_in_revision", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prompts") as batch_op:
        batch_op.drop_column("removed_in_revision")
