"""SQLAlchemy model of TopIssues' lasting groups: one row per complaint group of a project.

A group found in a window is matched to a stored one by centroid (recall.groups), so it keeps
one id from window to window. The centroid is stored as float32 bytes (1.5 KB for MiniLM's 384
dimensions) with its dimension, so a model change with another dimension never matches an old
group by accident.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from feedbackloop.store.models import Base, utcnow


class IssueGroupRow(Base):
    """A complaint group with a lasting identity: its centroid, label and when it was first seen."""

    __tablename__ = "issue_groups"
    __table_args__ = (Index("ix_issue_groups_project_seen", "project_id", "last_seen_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    dimension: Mapped[int] = mapped_column(Integer)
    centroid: Mapped[bytes] = mapped_column(LargeBinary)
    label: Mapped[str] = mapped_column(Text, default="")
    keywords: Mapped[list[Any]] = mapped_column(default=list)
    # The earliest occurrence of any member in any window the group was matched in.
    first_seen_at: Mapped[datetime] = mapped_column()
    # The latest window end the group was found in, and its size there.
    last_seen_at: Mapped[datetime] = mapped_column()
    last_size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
