"""GetTrends: feedback and complaint counts per time bucket and group, by the store's aggregates.

Three aggregate queries over the filtered feedback of [previous_start, end): the totals (each
feedback once), the groups (window and previous window counts per key, largest first, cut to
`top`), and the buckets of those groups (GROUP BY key and bucket index). No feedback row is
loaded into Python; the buckets are whole-second epoch offsets from the window start divided by
the bucket length, the same integer arithmetic on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, String, case, func, literal, select, union_all
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.selectable import Subquery

from feedbackloop.ingestion.repository import FeedbackQuery, _signal_predicate, feedback_query
from feedbackloop.signals import SIGNAL_NAMES
from feedbackloop.signals_sql import negative_flag
from feedbackloop.store.db import Database
from feedbackloop.store.epoch import epoch_seconds
from feedbackloop.store.models import Feedback, FeedbackCategory, Interaction


class Dimension(enum.StrEnum):
    CATEGORY = "category"
    PROMPT_VERSION = "prompt_version"
    MODEL_VERSION = "model_version"
    SIGNAL = "signal"
    ISSUE = "issue"  # recall.issue_trends: the grouping is not SQL's


@dataclass(frozen=True)
class TrendWindow:
    """[start, end) split into `buckets` buckets of `bucket`, and the window of the same length before."""

    start: datetime
    end: datetime
    bucket: timedelta
    previous_start: datetime

    @property
    def buckets(self) -> int:
        return -(-(self.end - self.start) // self.bucket)


@dataclass(frozen=True)
class Counts:
    total: int = 0
    negative: int = 0

    @property
    def share(self) -> float:
        return self.negative / self.total if self.total else 0.0


@dataclass(frozen=True)
class Group:
    key: str
    window: Counts
    previous: Counts
    buckets: list[Counts]
    label: str = ""


@dataclass(frozen=True)
class Trends:
    groups: list[Group]
    window: Counts
    previous: Counts
    groups_found: int


def trends(
    db: Database, project_id: str, query: FeedbackQuery, window: TrendWindow, dimension: Dimension, top: int
) -> Trends:
    if dimension is Dimension.ISSUE:
        raise ValueError("the issue dimension is not an SQL grouping: see recall.issue_trends")
    both = dataclasses.replace(query, start=window.previous_start, end=window.end)
    where = feedback_query(project_id, both).whereclause
    assert where is not None  # the project clause at least
    current = Feedback.occurred_at >= window.start
    negative = negative_flag()
    rows = _keyed_rows(dimension, where, negative)
    in_window = case((rows.c.occurred_at >= window.start, 1), else_=0)
    window_negative = case((rows.c.occurred_at >= window.start, rows.c.negative), else_=0)
    total = func.sum(in_window).label("total")
    groups_stmt = (
        select(
            rows.c.key,
            total,
            func.sum(window_negative).label("negative"),
            func.count().label("both_total"),
            func.sum(rows.c.negative).label("both_negative"),
        )
        .group_by(rows.c.key)
        .order_by(total.desc(), func.count().desc(), rows.c.key)
    )
    start_s = int(window.start.timestamp())
    bucket_s = int(window.bucket.total_seconds())
    with db.read() as session:
        window_counts, previous_counts = _totals(session, where, negative, current)
        found = session.execute(select(func.count()).select_from(groups_stmt.subquery())).scalar_one()
        top_rows = session.execute(groups_stmt.limit(top)).all()
        keys = [row.key for row in top_rows]
        index = ((epoch_seconds(rows.c.occurred_at) - start_s) // bucket_s).label("bucket")
        bucket_rows = (
            session.execute(
                select(rows.c.key, index, func.count(), func.sum(rows.c.negative))
                .where(rows.c.occurred_at >= window.start, rows.c.key.in_(keys))
                .group_by(rows.c.key, index)
            ).all()
            if keys
            else []
        )
    buckets: dict[str, list[Counts]] = {key: [Counts()] * window.buckets for key in keys}
    for key, i, count, neg in bucket_rows:
        buckets[key][int(i)] = Counts(int(count), int(neg or 0))
    groups = [
        Group(
            key=row.key,
            window=Counts(int(row.total or 0), int(row.negative or 0)),
            previous=Counts(
                int(row.both_total) - int(row.total or 0),
                int(row.both_negative or 0) - int(row.negative or 0),
            ),
            buckets=buckets[row.key],
        )
        for row in top_rows
    ]
    return Trends(groups=groups, window=window_counts, previous=previous_counts, groups_found=int(found))


def totals(db: Database, project_id: str, query: FeedbackQuery, window: TrendWindow) -> tuple[Counts, Counts]:
    """The filtered feedback of the window and of the one before, each feedback once."""
    both = dataclasses.replace(query, start=window.previous_start, end=window.end)
    where = feedback_query(project_id, both).whereclause
    assert where is not None
    with db.read() as session:
        return _totals(session, where, negative_flag(), Feedback.occurred_at >= window.start)


def _totals(
    session: Session, where: ColumnElement[bool], negative: ColumnElement[int], current: ColumnElement[bool]
) -> tuple[Counts, Counts]:
    row = session.execute(
        select(
            func.count(),
            func.sum(negative),
            func.sum(case((current, 1), else_=0)),
            func.sum(case((current, negative), else_=0)),
        ).where(where)
    ).one()
    both_total, both_negative, window_total, window_negative = (int(x or 0) for x in row)
    return Counts(window_total, window_negative), Counts(
        both_total - window_total, both_negative - window_negative
    )


def _keyed_rows(dimension: Dimension, where: ColumnElement[bool], negative: ColumnElement[int]) -> Subquery:
    """(key, occurred_at, negative) per feedback and value of the dimension."""
    columns = (Feedback.occurred_at.label("occurred_at"), negative.label("negative"))
    # Joined under aliases: the filter's and the complaint rule's EXISTS subqueries name the
    # tables themselves, and would otherwise correlate to the join instead of to the feedback.
    category = aliased(FeedbackCategory)
    interaction = aliased(Interaction)
    if dimension is Dimension.SIGNAL:
        # A feedback carries several signals: one branch per signal, each keeping its rows.
        branches = [
            select(literal(name, String).label("key"), *columns).where(where, _signal_predicate(name))
            for name in SIGNAL_NAMES
        ]
        return union_all(*branches).subquery("keyed")
    if dimension is Dimension.CATEGORY:
        stmt = (
            select(func.coalesce(category.category, "").label("key"), *columns)
            .select_from(Feedback)
            .outerjoin(category, category.feedback_id == Feedback.id)
        )
    else:
        name = func.coalesce(interaction.prompt_name, "")
        version = func.coalesce(interaction.prompt_version, "")
        key: ColumnElement[str] = (
            case((name == "", literal("", String)), (version == "", name), else_=name + "@" + version)
            if dimension is Dimension.PROMPT_VERSION
            else func.coalesce(interaction.model_version, "")
        )
        stmt = (
            select(key.label("key"), *columns)
            .select_from(Feedback)
            .outerjoin(interaction, interaction.id == Feedback.interaction_id)
        )
    return stmt.where(where).subquery("keyed")
