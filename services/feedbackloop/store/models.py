"""SQLAlchemy 2 typed models: the relational store is the source of truth.

Every row carries `project_id` (the tenant). Ids are server-generated strings, so a row can be
named in logs, traces and over the wire without exposing an auto-increment sequence.
Schema changes go through Alembic migrations in `store/migrations/versions/`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops tzinfo otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key, stored as a SHA-256 hash; the secret is shown once at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Space-separated scope names (auth.Scope).
    scopes: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(256), default="")
    # The reviewer identity reviews made with this key are recorded under ("" for none).
    reviewer: Mapped[str] = mapped_column(String(256), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Interaction(Base):
    """One session turn: what went into the model and what came out."""

    __tablename__ = "interactions"
    __table_args__ = (
        UniqueConstraint("project_id", "session_id", "turn_index", name="uq_interactions_session_turn"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    session_id: Mapped[str] = mapped_column(String(128))
    turn_index: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(String(128), default="")
    user_role: Mapped[str] = mapped_column(String(64), default="")
    application: Mapped[str] = mapped_column(String(128), default="")
    prompt_name: Mapped[str] = mapped_column(String(128), default="", index=True)
    prompt_version: Mapped[str] = mapped_column(String(64), default="")
    model_name: Mapped[str] = mapped_column(String(128), default="")
    model_version: Mapped[str] = mapped_column(String(128), default="", index=True)
    model_parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    input_messages: Mapped[list[Any]] = mapped_column(default=list)
    context_documents: Mapped[list[Any]] = mapped_column(default=list)
    response: Mapped[str] = mapped_column(Text, default="")
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    payload_hash: Mapped[str] = mapped_column(String(64))
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    span_id: Mapped[str] = mapped_column(String(16), default="")
    occurred_at: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    feedback: Mapped[list[Feedback]] = relationship(back_populates="interaction")


class Feedback(Base):
    """One feedback event: explicit and implicit signals on an interaction or a whole session."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("project_id", "idempotency_key", name="uq_feedback_idempotency"),
        Index("ix_feedback_project_occurred", "project_id", "occurred_at", "id"),
        Index("ix_feedback_project_session_occurred", "project_id", "session_id", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    session_id: Mapped[str] = mapped_column(String(128))
    interaction_id: Mapped[str | None] = mapped_column(ForeignKey("interactions.id"), index=True)
    # Explicit signals. Empty string / NULL means "not given".
    thumb: Mapped[str] = mapped_column(String(8), default="")  # "up" | "down" | ""
    rating: Mapped[int | None] = mapped_column(Integer, default=None)
    comment: Mapped[str] = mapped_column(Text, default="")
    correction: Mapped[str] = mapped_column(Text, default="")
    # Implicit signal: regenerate | copy | edit | abandon | rephrase | "".
    implicit: Mapped[str] = mapped_column(String(16), default="")
    implicit_text: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(128), default="")
    user_role: Mapped[str] = mapped_column(String(64), default="")
    model_confidence: Mapped[float | None] = mapped_column(Float, default=None)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(256), default=None)
    payload_hash: Mapped[str] = mapped_column(String(64))
    # The routing policy whose action produced this feedback (a review resolution), so the
    # policy never re-fires on its own output; "" for feedback from clients.
    origin_policy: Mapped[str] = mapped_column(String(128), default="")
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    span_id: Mapped[str] = mapped_column(String(16), default="")
    occurred_at: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The session's statistics as this feedback was stored (itself included), taken from
    # `SessionStats` in the same transaction: what policies read as `session.*`, live and in
    # backtests alike, at a cost that does not grow with the session.
    session_turn_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    session_feedback_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    session_negative_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The OTLP span the client named instead of an interaction ("" when none), and where the
    # feedback stands with it: "linked", "pending" (waiting in `span_link_waits`), "unlinked"
    # or "refused" (the wait ended without the span), "" when it names no span.
    span_trace_id: Mapped[str] = mapped_column(String(32), default="", server_default="")
    span_span_id: Mapped[str] = mapped_column(String(16), default="", server_default="")
    span_link: Mapped[str] = mapped_column(String(16), default="", server_default="")

    interaction: Mapped[Interaction | None] = relationship(back_populates="feedback")
    categories: Mapped[list[FeedbackCategory]] = relationship(
        back_populates="feedback", cascade="all, delete-orphan", order_by="FeedbackCategory.position"
    )

    @property
    def category_names(self) -> list[str]:
        return [c.category for c in self.categories]


class FeedbackCategory(Base):
    """A category picked on a feedback (a child table, so filters use an index, not JSON)."""

    __tablename__ = "feedback_categories"

    feedback_id: Mapped[str] = mapped_column(ForeignKey("feedback.id", ondelete="CASCADE"), primary_key=True)
    category: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)

    feedback: Mapped[Feedback] = relationship(back_populates="categories")

    __table_args__ = (Index("ix_feedback_categories_category", "category"),)


class SessionStats(Base):
    """Running counts per session, updated by an atomic upsert in the transaction that stores
    each interaction or feedback, so concurrent writers into one session never lose a count."""

    __tablename__ = "session_stats"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    turn_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    feedback_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    negative_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PipelineJob(Base):
    """Transactional outbox: committed with its feedback, consumed by the pipeline.

    A job moves through stages (`index`, then `route`) and ends `done` or `dead`.
    """

    __tablename__ = "pipeline_jobs"
    __table_args__ = (
        Index("ix_pipeline_jobs_claim", "status", "stage", "next_attempt_at"),
        # Fair claims: find the projects with pending work and take each one's oldest jobs.
        Index("ix_pipeline_jobs_project_claim", "status", "stage", "project_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    feedback_id: Mapped[str] = mapped_column(ForeignKey("feedback.id"), unique=True)
    stage: Mapped[str] = mapped_column(String(16), default="index")
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    # W3C traceparent of the ingestion span, so pipeline spans join the same trace.
    traceparent: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class InteractionSpan(Base):
    """The OTLP span an interaction was taken from: what makes a re-exported span one
    interaction, and how feedback naming a span finds its interaction."""

    __tablename__ = "interaction_spans"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    # Span id first: a batch looks its spans up by `span_id IN (...)` within the project.
    span_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    interaction_id: Mapped[str] = mapped_column(ForeignKey("interactions.id"), unique=True)


class SpanLinkWait(Base):
    """Feedback waiting for the span it names; the row is deleted once linked or expired.

    Its pipeline job waits too (status `waiting`), so the pipeline routes the feedback only once
    policies can see the interaction, or once the wait is over.
    """

    __tablename__ = "span_link_waits"
    __table_args__ = (
        Index("ix_span_link_waits_span", "project_id", "span_id", "trace_id"),
        Index("ix_span_link_waits_expires_at", "expires_at"),
    )

    feedback_id: Mapped[str] = mapped_column(ForeignKey("feedback.id"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    trace_id: Mapped[str] = mapped_column(String(32))
    span_id: Mapped[str] = mapped_column(String(16))
    # Whether the feedback is a complaint (`signals.is_negative`), for the session counters it
    # joins when it is linked.
    negative: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime] = mapped_column()


class FeedbackToken(Base):
    """A presigned feedback token: it lets an end user's browser submit feedback on one
    interaction until it expires (`feedback_tokens.py`).

    Only the token's SHA-256 is stored, as for API keys. It lives in the store, not in one
    process, so any api replica accepts a token another minted. `key_id` is the minting key
    ("anonymous" on a keyless loopback server, hence no foreign key): revoking that key ends
    its tokens.
    """

    __tablename__ = "feedback_tokens"
    __table_args__ = (Index("ix_feedback_tokens_expires_at", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    interaction_id: Mapped[str] = mapped_column(ForeignKey("interactions.id"))
    key_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
