"""SQLAlchemy models of the routing service: policy revisions, decisions and action sinks.

Every effect of an action (a prompt patch, a dataset item, a review item) carries a unique
`dedup_key` scoped to its project and target, so a retried pipeline step can never add it twice:
`<policy>#<action index>:fb:<feedback id>` for a per-event policy, `...:group:<group key>` for an
aggregate policy (review items are keyed per queue on the feedback, or the complaint an aggregate
fired for, `routing.actions.review_key`, so a queue never holds the same twice, whichever policy
enqueued it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from feedbackloop.store.models import Base, utcnow


class PolicyRevision(Base):
    """One applied version of a project's policy set; the highest revision is live."""

    __tablename__ = "policy_revisions"
    __table_args__ = (UniqueConstraint("project_id", "revision", name="uq_policy_revisions_revision"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    revision: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    canonical: Mapped[dict[str, Any]] = mapped_column()
    kind: Mapped[str] = mapped_column(String(16))  # apply | rollback | bootstrap
    source_revision: Mapped[int] = mapped_column(Integer, default=0)
    applied_by: Mapped[str] = mapped_column(String(128), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)


class DecisionRecord(Base):
    """What one policy of one revision decided for one feedback (non-matches included)."""

    __tablename__ = "routing_decisions"
    __table_args__ = (
        UniqueConstraint("project_id", "feedback_id", "revision", "policy", name="uq_routing_decisions_key"),
        Index("ix_routing_decisions_cooldown", "project_id", "policy", "group_key", "outcome", "event_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    feedback_id: Mapped[str] = mapped_column(ForeignKey("feedback.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer, default=0)
    policy: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    group_key: Mapped[str] = mapped_column(String(512), default="")
    # One dict per action: index, type, target, status, resource_id, detail.
    actions: Mapped[list[Any]] = mapped_column(default=list)
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    event_at: Mapped[datetime] = mapped_column()
    evaluated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PromptState(Base):
    """A prompt's pointer to its production version."""

    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_prompts_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(128))
    production_version: Mapped[int] = mapped_column(Integer, default=1)
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    # The policy revision whose set no longer defines this prompt; None while it is served.
    removed_in_revision: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PromptVersion(Base):
    """One materialised template version: from the policy set, or a policy version plus patches."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("project_id", "name", "version", name="uq_prompt_versions_version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(16))  # policy | patch
    patch_id: Mapped[str] = mapped_column(String(64), default="")
    revision: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PromptPatchRow(Base):
    """A proposed or applied prompt patch with its evidence."""

    __tablename__ = "prompt_patches"
    __table_args__ = (UniqueConstraint("project_id", "dedup_key", name="uq_prompt_patches_dedup"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    dedup_key: Mapped[str] = mapped_column(String(768))
    prompt: Mapped[str] = mapped_column(String(128), index=True)
    policy: Mapped[str] = mapped_column(String(128))
    action_index: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(32))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # proposed | applied | rejected | rolled_back
    evidence: Mapped[list[Any]] = mapped_column(default=list)
    result_version: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(128), default="")
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetItemRow(Base):
    """One dataset example; `vector` (unit-length floats) lets dedup work without Milvus."""

    __tablename__ = "dataset_items"
    __table_args__ = (
        UniqueConstraint("project_id", "dataset", "dedup_key", name="uq_dataset_items_dedup"),
        Index("ix_dataset_items_dataset", "project_id", "dataset", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    dataset: Mapped[str] = mapped_column(String(128))
    dedup_key: Mapped[str] = mapped_column(String(768))
    policy: Mapped[str] = mapped_column(String(128))
    revision: Mapped[int] = mapped_column(Integer)
    input_messages: Mapped[list[Any]] = mapped_column(default=list)
    output: Mapped[str] = mapped_column(Text, default="")
    ideal_output: Mapped[str] = mapped_column(Text, default="")
    item_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    source_feedback_ids: Mapped[list[Any]] = mapped_column(default=list)
    vector: Mapped[list[Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewItemRow(Base):
    """An item in a human review queue."""

    __tablename__ = "review_items"
    __table_args__ = (
        UniqueConstraint("project_id", "queue", "dedup_key", name="uq_review_items_dedup"),
        Index("ix_review_items_queue", "project_id", "queue", "status", "priority", "due_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    queue: Mapped[str] = mapped_column(String(128))
    dedup_key: Mapped[str] = mapped_column(String(768))
    policy: Mapped[str] = mapped_column(String(128))
    revision: Mapped[int] = mapped_column(Integer)
    feedback_id: Mapped[str] = mapped_column(ForeignKey("feedback.id"))
    group_key: Mapped[str] = mapped_column(String(512), default="")
    evidence: Mapped[list[Any]] = mapped_column(default=list)
    priority: Mapped[int] = mapped_column(Integer, default=50)
    due_at: Mapped[datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | done
    reviews_required: Mapped[int] = mapped_column(Integer, default=1)
    reviews_done: Mapped[int] = mapped_column(Integer, default=0)
    lease_seconds: Mapped[int] = mapped_column(Integer, default=900)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewClaim(Base):
    """One reviewer's lease on an item, then their verdict (visible to nobody else)."""

    __tablename__ = "review_claims"
    __table_args__ = (UniqueConstraint("item_id", "reviewer", name="uq_review_claims_reviewer"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    item_id: Mapped[str] = mapped_column(ForeignKey("review_items.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="claimed")  # claimed | released | resolved
    lease_expires_at: Mapped[datetime] = mapped_column()
    verdict: Mapped[str] = mapped_column(String(16), default="")
    feedback_id: Mapped[str] = mapped_column(String(64), default="")
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
