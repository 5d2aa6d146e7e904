"""routing: policy revisions, decision records, prompts and patches, datasets, review queues

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _project_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=f"fk_{table}_project_id_projects")


def upgrade() -> None:
    op.create_table(
        "policy_revisions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("canonical", sa.JSON(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source_revision", sa.Integer(), nullable=False),
        sa.Column("applied_by", sa.String(length=128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        _project_fk("policy_revisions"),
        sa.PrimaryKeyConstraint("id", name="pk_policy_revisions"),
        sa.UniqueConstraint("project_id", "revision", name="uq_policy_revisions_revision"),
    )
    op.create_table(
        "routing_decisions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("feedback_id", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("group_key", sa.String(length=512), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        _project_fk("routing_decisions"),
        sa.ForeignKeyConstraint(
            ["feedback_id"], ["feedback.id"], name="fk_routing_decisions_feedback_id_feedback"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_routing_decisions"),
        sa.UniqueConstraint(
            "project_id", "feedback_id", "revision", "policy", name="uq_routing_decisions_key"
        ),
    )
    op.create_index("ix_routing_decisions_feedback_id", "routing_decisions", ["feedback_id"])
    op.create_index(
        "ix_routing_decisions_cooldown",
        "routing_decisions",
        ["project_id", "policy", "group_key", "outcome", "event_at"],
    )
    op.create_table(
        "prompts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("production_version", sa.Integer(), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _project_fk("prompts"),
        sa.PrimaryKeyConstraint("id", name="pk_prompts"),
        sa.UniqueConstraint("project_id", "name", name="uq_prompts_name"),
    )
    op.create_table(
        "prompt_versions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("patch_id", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _project_fk("prompt_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_prompt_versions"),
        sa.UniqueConstraint("project_id", "name", "version", name="uq_prompt_versions_version"),
    )
    op.create_table(
        "prompt_patches",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("dedup_key", sa.String(length=768), nullable=False),
        sa.Column("prompt", sa.String(length=128), nullable=False),
        sa.Column("policy", sa.String(length=128), nullable=False),
        sa.Column("action_index", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("result_version", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _project_fk("prompt_patches"),
        sa.PrimaryKeyConstraint("id", name="pk_prompt_patches"),
        sa.UniqueConstraint("project_id", "dedup_key", name="uq_prompt_patches_dedup"),
    )
    op.create_index("ix_prompt_patches_prompt", "prompt_patches", ["prompt"])
    op.create_table(
        "dataset_items",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("dedup_key", sa.String(length=768), nullable=False),
        sa.Column("policy", sa.String(length=128), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("input_messages", sa.JSON(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("ideal_output", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("source_feedback_ids", sa.JSON(), nullable=False),
        sa.Column("vector", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _project_fk("dataset_items"),
        sa.PrimaryKeyConstraint("id", name="pk_dataset_items"),
        sa.UniqueConstraint("project_id", "dataset", "dedup_key", name="uq_dataset_items_dedup"),
    )
    op.create_index(
        "ix_dataset_items_dataset", "dataset_items", ["project_id", "dataset", "created_at", "id"]
    )
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=128), nullable=False),
        sa.Column("dedup_key", sa.String(length=768), nullable=False),
        sa.Column("policy", sa.String(length=128), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("feedback_id", sa.String(length=64), nullable=False),
        sa.Column("group_key", sa.String(length=512), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reviews_required", sa.Integer(), nullable=False),
        sa.Column("reviews_done", sa.Integer(), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _project_fk("review_items"),
        sa.ForeignKeyConstraint(
            ["feedback_id"], ["feedback.id"], name="fk_review_items_feedback_id_feedback"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_review_items"),
        sa.UniqueConstraint("project_id", "queue", "dedup_key", name="uq_review_items_dedup"),
    )
    op.create_index(
        "ix_review_items_queue", "review_items", ["project_id", "queue", "status", "priority", "due_at"]
    )
    op.create_table(
        "review_claims",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("item_id", sa.String(length=64), nullable=False),
        sa.Column("reviewer", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("feedback_id", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        _project_fk("review_claims"),
        sa.ForeignKeyConstraint(
            ["item_id"], ["review_items.id"], name="fk_review_claims_item_id_review_items"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_review_claims"),
        sa.UniqueConstraint("item_id", "reviewer", name="uq_review_claims_reviewer"),
    )
    op.create_index("ix_review_claims_item_id", "review_claims", ["item_id"])


def downgrade() -> None:
    op.drop_index("ix_review_claims_item_id", table_name="review_claims")
    op.drop_table("review_claims")
    op.drop_index("ix_review_items_queue", table_name="review_items")
    op.drop_table("review_items")
    op.drop_index("ix_dataset_items_dataset", table_name="dataset_items")
    op.drop_table("dataset_items")
    op.drop_index("ix_prompt_patches_prompt", table_name="prompt_patches")
    op.drop_table("prompt_patches")
    op.drop_table("prompt_versions")
    op.drop_table("prompts")
    op.drop_index("ix_routing_decisions_cooldown", table_name="routing_decisions")
    op.drop_index("ix_routing_decisions_feedback_id", table_name="routing_decisions")
    op.drop_table("routing_decisions")
    op.drop_table("policy_revisions")
