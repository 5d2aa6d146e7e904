"""otlp spans: interactions taken from OTLP spans, and feedback that names a span

`interaction_spans` maps a span (trace id, span id) to the interaction made from it, so the
same span exported twice is one interaction and feedback can name the span. Feedback keeps the
span it named and its link state; `span_link_waits` holds the feedback still waiting for its
span.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "interaction_spans",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("span_id", sa.String(length=16), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("interaction_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["interaction_id"],
            ["interactions.id"],
            name=op.f("fk_interaction_spans_interaction_id_interactions"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_interaction_spans_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("project_id", "span_id", "trace_id", name=op.f("pk_interaction_spans")),
        sa.UniqueConstraint("interaction_id", name=op.f("uq_interaction_spans_interaction_id")),
    )
    op.create_table(
        "span_link_waits",
        sa.Column("feedback_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("span_id", sa.String(length=16), nullable=False),
        sa.Column("negative", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["feedback_id"], ["feedback.id"], name=op.f("fk_span_link_waits_feedback_id_feedback")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_span_link_waits_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("feedback_id", name=op.f("pk_span_link_waits")),
    )
    op.create_index("ix_span_link_waits_span", "span_link_waits", ["project_id", "span_id", "trace_id"])
    op.create_index("ix_span_link_waits_expires_at", "span_link_waits", ["expires_at"])
    with op.batch_alter_table("feedback") as batch_op:
        batch_op.add_column(
            sa.Column("span_trace_id", sa.String(length=32), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("span_span_id", sa.String(length=16), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("span_link", sa.String(length=16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch_op:
        batch_op.drop_column("span_link")
        batch_op.drop_column("span_span_id")
        batch_op.drop_column("span_trace_id")
    op.drop_index("ix_span_link_waits_expires_at", table_name="span_link_waits")
    op.drop_index("ix_span_link_waits_span", table_name="span_link_waits")
    op.drop_table("span_link_waits")
    op.drop_table("interaction_spans")
