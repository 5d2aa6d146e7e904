"""Feedback that names an OTLP span: finding the span's interaction, waiting for a span not
received yet, and linking or expiring what waits.

Exporters batch (the SDKs send every few seconds), so an application's feedback can arrive
before the span it names. Such feedback is stored and acknowledged at once, with a
`span_link_waits` row and its pipeline job held back (status `waiting`): nothing routes it
while policies could not yet see its interaction, and it is counted in no session yet. It is
linked when the span arrives (in the transaction that stores the span, and by the periodic
sweep, which also catches a span committed concurrently with the feedback), and its job is
released. If the span has not come by `expires_at`, the sweep applies
FEEDBACKLOOP_SPAN_LINK_EXPIRY: `keep` releases it as session-level feedback of the session
named by the trace id (where the span's interaction would have been without a conversation
id), `refuse` puts its job in the dead letter, so it is never routed unless retried.

Every transition deletes the wait row first and acts only if it did, so two processes (two
`api` replicas sweeping, or a sweep racing a span's arrival) never act twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, delete, select, update

from feedbackloop.store import session_stats
from feedbackloop.store.db import Database
from feedbackloop.store.models import (
    Feedback,
    Interaction,
    InteractionSpan,
    PipelineJob,
    SpanLinkWait,
    utcnow,
)

log = logging.getLogger(__name__)

# A pipeline job held back until its feedback is linked or its wait expires; claims take only
# `pending` jobs, so a waiting job is invisible to the stages.
WAITING = "waiting"
PENDING, DEAD = "pending", "dead"

LINKED, PENDING_LINK, UNLINKED, REFUSED = "linked", "pending", "unlinked", "refused"

Expiry = Literal["keep", "refuse"]
SpanKey = tuple[str, str]  # (trace_id, span_id), lowercase hex


@dataclass(frozen=True)
class SpanTarget:
    interaction_id: str
    session_id: str


def find_spans(connection: Connection, project_id: str, keys: Iterable[SpanKey]) -> dict[SpanKey, SpanTarget]:
    """The interactions taken from these spans, by span."""
    wanted = set(keys)
    if not wanted:
        return {}
    rows = connection.execute(
        select(InteractionSpan.trace_id, InteractionSpan.span_id, Interaction.id, Interaction.session_id)
        .join(Interaction, Interaction.id == InteractionSpan.interaction_id)
        .where(
            InteractionSpan.project_id == project_id,
            InteractionSpan.span_id.in_(sorted({span for _, span in wanted})),
        )
    )
    found = {(trace, span): SpanTarget(iid, sid) for trace, span, iid, sid in rows}
    return {key: target for key, target in found.items() if key in wanted}


def link_waiting(
    connection: Connection, project_id: str, spans: dict[SpanKey, SpanTarget], now: datetime | None = None
) -> list[str]:
    """Link the feedback waiting for any of `spans` to their interactions; the feedback ids."""
    if not spans:
        return []
    rows = connection.execute(
        select(SpanLinkWait.feedback_id, SpanLinkWait.trace_id, SpanLinkWait.span_id, SpanLinkWait.negative)
        .where(
            SpanLinkWait.project_id == project_id,
            SpanLinkWait.span_id.in_(sorted({span for _, span in spans})),
        )
        .order_by(SpanLinkWait.feedback_id)
    )
    matched = [
        (fid, spans[(trace, span)], negative) for fid, trace, span, negative in rows if (trace, span) in spans
    ]
    return _release(
        connection,
        project_id,
        [(fid, t.session_id, t.interaction_id, neg) for fid, t, neg in matched],
        LINKED,
        now,
    )


def sweep(db: Database, expiry: Expiry, *, now: datetime | None = None, limit: int = 500) -> tuple[int, int]:
    """Link waiting feedback whose span has arrived, then expire what waited too long, as
    `expiry` says; (linked, expired). Runs in one write transaction, at most `limit` of each."""
    now = now or utcnow()
    linked = expired = 0
    with db.write_connection() as connection:
        arrived = connection.execute(
            select(
                SpanLinkWait.project_id,
                SpanLinkWait.feedback_id,
                SpanLinkWait.negative,
                Interaction.id,
                Interaction.session_id,
            )
            .join(
                InteractionSpan,
                (InteractionSpan.project_id == SpanLinkWait.project_id)
                & (InteractionSpan.span_id == SpanLinkWait.span_id)
                & (InteractionSpan.trace_id == SpanLinkWait.trace_id),
            )
            .join(Interaction, Interaction.id == InteractionSpan.interaction_id)
            .order_by(SpanLinkWait.feedback_id)
            .limit(limit)
        ).all()
        by_project: dict[str, list[tuple[str, str, str | None, bool]]] = {}
        for project_id, fid, negative, iid, sid in arrived:
            by_project.setdefault(project_id, []).append((fid, sid, iid, negative))
        for project_id, items in by_project.items():
            linked += len(_release(connection, project_id, items, LINKED, now))
        overdue = connection.execute(
            select(
                SpanLinkWait.project_id,
                SpanLinkWait.feedback_id,
                SpanLinkWait.trace_id,
                SpanLinkWait.negative,
            )
            .where(SpanLinkWait.expires_at <= now)
            .order_by(SpanLinkWait.expires_at, SpanLinkWait.feedback_id)
            .limit(limit)
        ).all()
        by_project = {}
        for project_id, fid, trace_id, negative in overdue:
            by_project.setdefault(project_id, []).append((fid, trace_id, None, negative))
        for project_id, items in by_project.items():
            if expiry == "keep":
                expired += len(_release(connection, project_id, items, UNLINKED, now))
            else:
                expired += len(_refuse(connection, items, now))
    if linked or expired:
        log.info("span links: %d feedback linked to their spans, %d expired (%s)", linked, expired, expiry)
    return linked, expired


def _claim(connection: Connection, feedback_id: str) -> bool:
    """Take the wait row: True for the one transaction that deleted it."""
    result = connection.execute(delete(SpanLinkWait).where(SpanLinkWait.feedback_id == feedback_id))
    return bool(result.rowcount)


def _release(
    connection: Connection,
    project_id: str,
    items: list[tuple[str, str, str | None, bool]],
    state: str,
    now: datetime | None,
) -> list[str]:
    """Give each (feedback id, session, interaction or None, negative) its session and place in
    the session's counts, mark it `state`, and let its job go to the pipeline."""
    now = now or utcnow()
    taken = [item for item in items if _claim(connection, item[0])]
    if not taken:
        return []
    deltas: dict[str, session_stats.Counts] = {}
    for _, session_id, _, negative in taken:
        d = deltas.get(session_id, session_stats.Counts())
        deltas[session_id] = session_stats.Counts(d.turns, d.feedback + 1, d.negative + negative)
    totals = session_stats.bump(connection, project_id, deltas)
    running = {
        sid: (totals[sid].feedback - d.feedback, totals[sid].negative - d.negative)
        for sid, d in deltas.items()
    }
    for feedback_id, session_id, interaction_id, negative in taken:
        count, negatives = running[session_id]
        running[session_id] = (count + 1, negatives + negative)
        connection.execute(
            update(Feedback)
            .where(Feedback.id == feedback_id)
            .values(
                session_id=session_id,
                interaction_id=interaction_id,
                span_link=state,
                session_turn_count=totals[session_id].turns,
                session_feedback_count=count + 1,
                session_negative_count=negatives + negative,
            )
        )
    ids = [item[0] for item in taken]
    connection.execute(
        update(PipelineJob)
        .where(PipelineJob.feedback_id.in_(ids), PipelineJob.status == WAITING)
        .values(status=PENDING, next_attempt_at=now, updated_at=now)
    )
    return ids


def _refuse(
    connection: Connection, items: list[tuple[str, str, str | None, bool]], now: datetime
) -> list[str]:
    taken = [item[0] for item in items if _claim(connection, item[0])]
    if not taken:
        return []
    connection.execute(update(Feedback).where(Feedback.id.in_(taken)).values(span_link=REFUSED))
    connection.execute(
        update(PipelineJob)
        .where(PipelineJob.feedback_id.in_(taken), PipelineJob.status == WAITING)
        .values(
            status=DEAD,
            updated_at=now,
            last_error="the span this feedback names did not arrive within FEEDBACKLOOP_SPAN_LINK_WAIT_SECONDS "
            "(FEEDBACKLOOP_SPAN_LINK_EXPIRY=refuse): not routed",
        )
    )
    return taken
