"""Store operations for ingestion: interactions, feedback with its pipeline job, read-back.

A feedback row and its pipeline job are written in the same transaction (transactional
outbox), so every acknowledged event reaches the pipeline. The same transaction bumps the
session's counters (`store.session_stats`) and stores on the feedback row the counts it
produced, so routing reads a session's statistics without reading its history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Select, Table, and_, exists, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from feedbackloop.errors import AlreadyExists, Conflict, FeedbackloopError, InvalidArgument, NotFound
from feedbackloop.ingestion import span_links
from feedbackloop.ingestion.validation import FeedbackInput, InteractionInput
from feedbackloop.paging import SortKey, page
from feedbackloop.signals import is_negative
from feedbackloop.store import session_stats
from feedbackloop.store.db import Database
from feedbackloop.store.lookups import feedback_by_ids
from feedbackloop.store.models import (
    Feedback,
    FeedbackCategory,
    Interaction,
    PipelineJob,
    SpanLinkWait,
    new_id,
    utcnow,
)


@dataclass(frozen=True)
class TraceIds:
    trace_id: str = ""
    span_id: str = ""
    traceparent: str = ""


@dataclass(frozen=True)
class Stored:
    id: str
    created: bool


@dataclass(frozen=True)
class FeedbackQuery:
    start: datetime | None = None
    end: datetime | None = None
    signals: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    model_versions: tuple[str, ...] = ()
    prompt_names: tuple[str, ...] = ()
    user_roles: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    session_id: str = ""


def record_interaction(db: Database, project_id: str, data: InteractionInput, ids: TraceIds) -> Stored:
    try:
        with db.write() as session:
            existing = _interaction_at(session, project_id, data.session_id, data.turn_index)
            if existing is not None:
                return _replayed_interaction(existing, data)
            interaction_id = new_id("int")
            session.add(
                Interaction(
                    id=interaction_id,
                    project_id=project_id,
                    session_id=data.session_id,
                    turn_index=data.turn_index,
                    user_id=data.user_id,
                    user_role=data.user_role,
                    application=data.application,
                    prompt_name=data.prompt_name,
                    prompt_version=data.prompt_version,
                    model_name=data.model_name,
                    model_version=data.model_version,
                    model_parameters=data.model_parameters,
                    input_messages=data.input_messages,
                    context_documents=data.context_documents,
                    response=data.response,
                    latency_ms=data.latency_ms,
                    prompt_tokens=data.prompt_tokens,
                    completion_tokens=data.completion_tokens,
                    attributes=data.attributes,
                    payload_hash=data.payload_hash,
                    trace_id=ids.trace_id,
                    span_id=ids.span_id,
                    occurred_at=data.occurred_at,
                    received_at=utcnow(),
                )
            )
            session.flush()  # a duplicate turn fails here, before the session's counter moves
            session_stats.bump(session, project_id, {data.session_id: session_stats.Counts(turns=1)})
            return Stored(interaction_id, True)
    except IntegrityError:
        # A concurrent call recorded the same turn first (PostgreSQL): answer as a replay.
        with db.read() as session:
            existing = _interaction_at(session, project_id, data.session_id, data.turn_index)
            if existing is None:
                raise
            return _replayed_interaction(existing, data)


def _interaction_at(
    session: Session, project_id: str, session_id: str, turn_index: int
) -> Interaction | None:
    return session.scalar(
        select(Interaction).where(
            Interaction.project_id == project_id,
            Interaction.session_id == session_id,
            Interaction.turn_index == turn_index,
        )
    )


def _replayed_interaction(existing: Interaction, data: InteractionInput) -> Stored:
    if existing.payload_hash != data.payload_hash:
        raise AlreadyExists(
            f"interaction.turn_index: session '{data.session_id}' already has turn {data.turn_index} "
            f"({existing.id}) with a different payload"
        )
    return Stored(existing.id, False)


def submit_feedback(db: Database, project_id: str, data: FeedbackInput, ids: TraceIds) -> Stored:
    """Store one feedback event and its pipeline job; idempotent on its key."""
    results = submit_feedback_batch(db, project_id, [(data, ids)])
    outcome = results[0]
    if isinstance(outcome, FeedbackloopError):
        raise outcome
    return outcome


def submit_feedback_batch(
    db: Database, project_id: str, events: Sequence[tuple[FeedbackInput, TraceIds]]
) -> list[Stored | FeedbackloopError]:
    """Store many events in one transaction; one outcome per event, in order.

    An event refused for its own reason (unknown id, idempotency conflict) does not stop the
    others. If a concurrent writer wins an idempotency race (PostgreSQL), the batch is retried
    event by event so each outcome is exact.
    """
    try:
        with db.write_connection() as connection:
            return _store_batch(connection, project_id, events)
    except IntegrityError:
        if len(events) == 1:
            with db.write_connection() as connection:
                return _store_batch(connection, project_id, events)
        outcomes: list[Stored | FeedbackloopError] = []
        for event in events:
            outcomes.extend(submit_feedback_batch(db, project_id, [event]))
        return outcomes


def _store_batch(
    session: Connection, project_id: str, events: Sequence[tuple[FeedbackInput, TraceIds]]
) -> list[Stored | FeedbackloopError]:
    keys = [data.idempotency_key for data, _ in events if data.idempotency_key]
    known: dict[str, tuple[str, str]] = {}
    if keys:
        rows = session.execute(
            select(Feedback.idempotency_key, Feedback.id, Feedback.payload_hash).where(
                Feedback.project_id == project_id, Feedback.idempotency_key.in_(keys)
            )
        )
        known = {key: (fid, digest) for key, fid, digest in rows if key is not None}
    interactions = _interaction_sessions(session, project_id, [d.interaction_id for d, _ in events])
    sessions = _known_sessions(
        session, project_id, [d.session_id for d, _ in events if d.session_id and not d.interaction_id]
    )
    spans = span_links.find_spans(
        session, project_id, [(d.span_trace_id, d.span_span_id) for d, _ in events if d.span_trace_id]
    )
    outcomes: list[Stored | FeedbackloopError] = []
    feedback_rows: list[dict[str, Any]] = []
    category_rows: list[dict[str, Any]] = []
    job_rows: list[dict[str, Any]] = []
    wait_rows: list[dict[str, Any]] = []
    negatives: list[bool] = []
    received = utcnow()
    for data, ids in events:
        if data.idempotency_key and data.idempotency_key in known:
            feedback_id, digest = known[data.idempotency_key]
            if digest != data.payload_hash:
                outcomes.append(
                    Conflict(
                        f"feedback.idempotency_key: '{data.idempotency_key}' was already used for "
                        f"{feedback_id} with a different payload"
                    )
                )
            else:
                outcomes.append(Stored(feedback_id, False))
            continue
        try:
            session_id, interaction_id, link = _resolve_target(data, interactions, sessions, spans)
        except FeedbackloopError as error:
            outcomes.append(error)
            continue
        feedback_id = new_id("fb")
        waiting = link == span_links.PENDING_LINK
        # Plain rows, inserted below with one executemany per table: the ORM unit of work
        # (an object graph per event, flushed one INSERT at a time) was most of the hot path.
        feedback_rows.append(
            {
                "id": feedback_id,
                "project_id": project_id,
                "session_id": session_id,
                "interaction_id": interaction_id,
                "thumb": data.thumb,
                "rating": data.rating,
                "comment": data.comment,
                "correction": data.correction,
                "implicit": data.implicit,
                "implicit_text": data.implicit_text,
                "source": data.source,
                "user_id": data.user_id,
                "user_role": data.user_role,
                "model_confidence": data.model_confidence,
                "attributes": data.attributes,
                "idempotency_key": data.idempotency_key,
                "payload_hash": data.payload_hash,
                "origin_policy": data.origin_policy,
                "trace_id": ids.trace_id,
                "span_id": ids.span_id,
                "occurred_at": data.occurred_at,
                "received_at": received,
                "span_trace_id": data.span_trace_id,
                "span_span_id": data.span_span_id,
                "span_link": link,
                # Waiting feedback joins its session's counts when it is linked (span_links).
                "session_turn_count": 0,
                "session_feedback_count": 0,
                "session_negative_count": 0,
            }
        )
        negatives.append(is_negative(data))
        if waiting:
            wait_rows.append(
                {
                    "feedback_id": feedback_id,
                    "project_id": project_id,
                    "trace_id": data.span_trace_id,
                    "span_id": data.span_span_id,
                    "negative": negatives[-1],
                    "expires_at": received + timedelta(seconds=data.span_wait_seconds),
                }
            )
        category_rows.extend(
            {"feedback_id": feedback_id, "category": c, "position": i} for i, c in enumerate(data.categories)
        )
        job_rows.append(
            {
                "project_id": project_id,
                "feedback_id": feedback_id,
                "traceparent": ids.traceparent,
                "status": span_links.WAITING if waiting else span_links.PENDING,
                "next_attempt_at": received,
                "created_at": received,
                "updated_at": received,
            }
        )
        if data.idempotency_key:
            known[data.idempotency_key] = (feedback_id, data.payload_hash)
        outcomes.append(Stored(feedback_id, True))
    if feedback_rows:
        counted = [
            (r, n)
            for r, n in zip(feedback_rows, negatives, strict=True)
            if r["span_link"] != span_links.PENDING_LINK
        ]
        _count_in_sessions(session, project_id, [r for r, _ in counted], [n for _, n in counted])
        session.execute(insert(_table(Feedback)), feedback_rows)
        if category_rows:
            session.execute(insert(_table(FeedbackCategory)), category_rows)
        session.execute(insert(_table(PipelineJob)), job_rows)
        if wait_rows:
            session.execute(insert(_table(SpanLinkWait)), wait_rows)
    return outcomes


def _count_in_sessions(
    connection: Connection, project_id: str, rows: list[dict[str, Any]], negatives: list[bool]
) -> None:
    """Bump the sessions' counters by these new rows and give each row its place in them:
    the batch's rows follow each other in order, after what the session held before."""
    if not rows:
        return
    deltas: dict[str, session_stats.Counts] = {}
    for row, negative in zip(rows, negatives, strict=True):
        d = deltas.get(row["session_id"], session_stats.Counts())
        deltas[row["session_id"]] = session_stats.Counts(d.turns, d.feedback + 1, d.negative + negative)
    totals = session_stats.bump(connection, project_id, deltas)
    running = {
        sid: (totals[sid].feedback - d.feedback, totals[sid].negative - d.negative)
        for sid, d in deltas.items()
    }
    for row, negative in zip(rows, negatives, strict=True):
        sid = row["session_id"]
        count, negative_count = running[sid]
        running[sid] = (count + 1, negative_count + negative)
        row["session_turn_count"] = totals[sid].turns
        row["session_feedback_count"] = count + 1
        row["session_negative_count"] = negative_count + negative


def _table(model: type[Feedback | FeedbackCategory | PipelineJob | SpanLinkWait]) -> Table:
    return cast(Table, model.__table__)


def _interaction_sessions(session: Connection, project_id: str, interaction_ids: list[str]) -> dict[str, str]:
    wanted = sorted({i for i in interaction_ids if i})
    if not wanted:
        return {}
    # By primary key, project checked on the rows: see feedbackloop.store.lookups for why.
    rows = session.execute(
        select(Interaction.id, Interaction.session_id, Interaction.project_id).where(
            Interaction.id.in_(wanted)
        )
    )
    return {row.id: row.session_id for row in rows if row.project_id == project_id}


def _known_sessions(session: Connection, project_id: str, session_ids: list[str]) -> set[str]:
    wanted = sorted(set(session_ids))
    if not wanted:
        return set()
    rows = session.scalars(
        select(Interaction.session_id)
        .where(Interaction.project_id == project_id, Interaction.session_id.in_(wanted))
        .distinct()
    )
    return set(rows)


def _resolve_target(
    data: FeedbackInput,
    interactions: dict[str, str],
    sessions: set[str],
    spans: dict[span_links.SpanKey, span_links.SpanTarget],
) -> tuple[str, str | None, str]:
    """(session id, interaction id or None, span link state) of the feedback's target."""
    if data.span_trace_id:
        target = spans.get((data.span_trace_id, data.span_span_id))
        if target is not None:
            return target.session_id, target.interaction_id, span_links.LINKED
        if data.span_wait_seconds <= 0:
            raise NotFound(
                "feedback.span",
                f"no span {data.span_span_id} of trace {data.span_trace_id} received in this project",
            )
        # Until linked, the session the span's interaction has when it carries no conversation id.
        return data.span_trace_id, None, span_links.PENDING_LINK
    return _resolve_session(data, interactions, sessions), data.interaction_id or None, ""


def _resolve_session(data: FeedbackInput, interactions: dict[str, str], sessions: set[str]) -> str:
    if data.interaction_id:
        owner = interactions.get(data.interaction_id)
        if owner is None:
            raise NotFound(
                "feedback.interaction_id", f"no interaction '{data.interaction_id}' in this project"
            )
        if data.session_id and data.session_id != owner:
            raise InvalidArgument.single(
                "feedback.session_id",
                f"interaction '{data.interaction_id}' belongs to session '{owner}', not '{data.session_id}'",
            )
        return owner
    if data.session_id not in sessions:
        raise NotFound("feedback.session_id", f"no session '{data.session_id}' in this project")
    return data.session_id


# --- read side ---


def get_feedback(db: Database, project_id: str, feedback_id: str) -> Feedback:
    with db.read() as session:
        feedback = feedback_by_ids(session, project_id, [feedback_id]).get(feedback_id)
    if feedback is None:
        raise NotFound("feedback_id", f"no feedback '{feedback_id}' in this project")
    return feedback


def get_feedback_many(db: Database, project_id: str, feedback_ids: Sequence[str]) -> dict[str, Feedback]:
    if not feedback_ids:
        return {}
    with db.read() as session:
        return feedback_by_ids(session, project_id, feedback_ids)


def get_session(db: Database, project_id: str, session_id: str) -> tuple[list[Interaction], list[Feedback]]:
    with db.read() as session:
        interactions = list(
            session.scalars(
                select(Interaction)
                .where(Interaction.project_id == project_id, Interaction.session_id == session_id)
                .order_by(Interaction.turn_index)
            )
        )
        feedback = list(
            session.scalars(
                select(Feedback)
                .where(Feedback.project_id == project_id, Feedback.session_id == session_id)
                .order_by(Feedback.received_at, Feedback.id)
                .options(selectinload(Feedback.categories))
            )
        )
    if not interactions and not feedback:
        raise NotFound("session_id", f"no session '{session_id}' in this project")
    return interactions, feedback


def feedback_query(project_id: str, query: FeedbackQuery) -> Select[Feedback]:
    """ListFeedback's filtered feedback select."""
    stmt = select(Feedback).where(Feedback.project_id == project_id)
    if query.start is not None:
        stmt = stmt.where(Feedback.occurred_at >= query.start)
    if query.end is not None:
        stmt = stmt.where(Feedback.occurred_at < query.end)
    if query.signals:
        stmt = stmt.where(or_(*(_signal_predicate(s) for s in query.signals)))
    if query.categories:
        stmt = stmt.where(
            exists().where(
                FeedbackCategory.feedback_id == Feedback.id, FeedbackCategory.category.in_(query.categories)
            )
        )
    if query.model_versions or query.prompt_names:
        conditions = [Interaction.id == Feedback.interaction_id]
        if query.model_versions:
            conditions.append(Interaction.model_version.in_(query.model_versions))
        if query.prompt_names:
            conditions.append(Interaction.prompt_name.in_(query.prompt_names))
        stmt = stmt.where(exists().where(and_(*conditions)))
    if query.user_roles:
        stmt = stmt.where(Feedback.user_role.in_(query.user_roles))
    if query.sources:
        stmt = stmt.where(Feedback.source.in_(query.sources))
    if query.session_id:
        stmt = stmt.where(Feedback.session_id == query.session_id)
    return stmt


def _signal_predicate(signal: str) -> ColumnElement[bool]:
    if signal == "thumbs_up":
        return Feedback.thumb == "up"
    if signal == "thumbs_down":
        return Feedback.thumb == "down"
    if signal == "rating":
        return Feedback.rating.is_not(None)
    if signal == "category":
        return exists().where(FeedbackCategory.feedback_id == Feedback.id)
    if signal == "comment":
        return Feedback.comment != ""
    if signal == "correction":
        return Feedback.correction != ""
    return Feedback.implicit == signal


FEEDBACK_ORDER = (SortKey(Feedback.occurred_at, descending=True), SortKey(Feedback.id, descending=True))


def list_feedback(
    db: Database, project_id: str, query: FeedbackQuery, *, size: int, token: str, digest: str
) -> tuple[list[Feedback], str]:
    """One page, newest first, and the token of the next ("" on the last page)."""
    stmt = feedback_query(project_id, query).options(selectinload(Feedback.categories))
    with db.read() as session:
        return page(session, stmt, FEEDBACK_ORDER, size=size, token=token, digest=digest)
