"""api_keys: a key may carry the reviewer identity its reviews are recorded under

Independent reviews must come from distinct people, so the reviewer is bound to the key
(set at `keys create --reviewer NAME`) instead of taken from the request.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("reviewer", sa.String(length=256), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("reviewer")
