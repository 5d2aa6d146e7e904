"""Storing the interactions of a batch of LLM spans: idempotent on (trace id, span id).

A span already stored (an exporter's retry) is left as it is. New spans get the next turns of
their sessions, in the order they started: the first span of a session is turn 0, and a span
that arrives later than another of its session takes the next turn even if it started
earlier (a stored turn's index never changes, since feedback and routing refer to it). Spans
of a batch that started at the same time keep their order in the request: SDKs that stamp
start times in milliseconds (the Node SDK) give two quick calls the same start, and list spans
in the order they ended. The same transaction links the feedback that was waiting for these
spans (`span_links`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from feedbackloop.ingestion import span_links
from feedbackloop.ingestion.span_links import SpanKey, SpanTarget
from feedbackloop.otlp.mapping import MappedSpan
from feedbackloop.store import session_stats
from feedbackloop.store.bulk import insert_rows
from feedbackloop.store.db import Database
from feedbackloop.store.lookups import chunks
from feedbackloop.store.models import Interaction, InteractionSpan, new_id, utcnow
from feedbackloop.store.otlp_models import InteractionResponse

# A concurrent writer may take a turn or a span first (PostgreSQL): the batch is then read
# again and retried, this many times in all.
ATTEMPTS = 5


@dataclass(frozen=True)
class StoredSpans:
    # The interaction of every span given (new or already stored), by span.
    targets: dict[SpanKey, SpanTarget]
    created: int
    replayed: int
    # Feedback that was waiting for these spans and is now linked.
    linked_feedback: list[str]


def store_spans(db: Database, project_id: str, spans: Sequence[MappedSpan]) -> StoredSpans:
    for attempt in range(ATTEMPTS):
        try:
            with db.write_connection() as connection:
                return _store(connection, project_id, spans)
        except IntegrityError:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _store(connection: Connection, project_id: str, spans: Sequence[MappedSpan]) -> StoredSpans:
    keys = [(s.trace_id, s.span_id) for s in spans]
    known = span_links.find_spans(connection, project_id, keys)
    fresh: dict[SpanKey, MappedSpan] = {}
    for span in spans:
        key = (span.trace_id, span.span_id)
        if key not in known and key not in fresh and span.interaction is not None:
            fresh[key] = span  # the first copy of a span repeated in one batch wins
    if not fresh:
        return StoredSpans(known, 0, len(spans), [])
    # A stable sort: equal start times keep the request's order (not the random span ids').
    ordered = sorted(fresh.values(), key=lambda s: (s.interaction.session_id, s.start_unix_nano))  # type: ignore[union-attr]
    next_turn = _next_turns(connection, project_id, sorted({s.interaction.session_id for s in ordered}))  # type: ignore[union-attr]
    received = utcnow()
    rows: list[dict[str, Any]] = []
    span_rows: list[dict[str, Any]] = []
    targets = dict(known)
    turns: Counter[str] = Counter()
    for span in ordered:
        data = span.interaction
        assert data is not None
        turn = next_turn.get(data.session_id, 0)
        next_turn[data.session_id] = turn + 1
        interaction_id = new_id("int")
        rows.append(
            {
                "id": interaction_id,
                "session_id": data.session_id,
                "turn_index": turn,
                "user_id": data.user_id,
                "user_role": data.user_role,
                "application": data.application,
                "prompt_name": data.prompt_name,
                "prompt_version": data.prompt_version,
                "model_name": data.model_name,
                "model_version": data.model_version,
                "model_parameters": data.model_parameters,
                "input_messages": data.input_messages,
                "context_documents": data.context_documents,
                "response": data.response,
                "latency_ms": data.latency_ms,
                "prompt_tokens": data.prompt_tokens,
                "completion_tokens": data.completion_tokens,
                "attributes": data.attributes,
                "payload_hash": data.payload_hash,
                "trace_id": span.trace_id,
                "span_id": span.span_id,
                "occurred_at": data.occurred_at,
            }
        )
        span_rows.append(
            {
                "span_id": span.span_id,
                "trace_id": span.trace_id,
                "interaction_id": interaction_id,
            }
        )
        targets[(span.trace_id, span.span_id)] = SpanTarget(interaction_id, data.session_id)
        turns[data.session_id] += 1
    insert_rows(connection, _table(Interaction), rows, {"project_id": project_id, "received_at": received})
    insert_rows(connection, _table(InteractionSpan), span_rows, {"project_id": project_id})
    response_rows = [
        {"project_id": project_id, "response_id": span.response_id, "interaction_id": row["id"]}
        for span, row in zip(ordered, rows, strict=True)
        if span.response_id
    ]
    if response_rows:
        _insert_responses(connection, response_rows)
    session_stats.bump(connection, project_id, {s: session_stats.Counts(turns=n) for s, n in turns.items()})
    new_targets = {key: targets[key] for key in fresh}
    linked = span_links.link_waiting(connection, project_id, new_targets, received)
    return StoredSpans(targets, len(fresh), len(spans) - len(fresh), linked)


def _insert_responses(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Keep each response id's first interaction: a later span with the same id (a second
    instrumentation of the same call) is stored, without the id."""
    table = _table(InteractionResponse)
    dialect = connection.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"response ids need an upsert on {dialect}")
    statement = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    connection.execute(statement.on_conflict_do_nothing(), rows)


def find_responses(db: Database, project_id: str, response_ids: Sequence[str]) -> dict[str, SpanKey]:
    """The span (trace id, span id) of the interaction each known response id came from."""
    out: dict[str, SpanKey] = {}
    with db.read() as session:
        for chunk in chunks(sorted(set(response_ids))):
            rows = session.execute(
                select(InteractionResponse.response_id, Interaction.trace_id, Interaction.span_id)
                .join(Interaction, Interaction.id == InteractionResponse.interaction_id)
                .where(
                    InteractionResponse.project_id == project_id,
                    InteractionResponse.response_id.in_(list(chunk)),
                )
            )
            out.update({response: (trace, span) for response, trace, span in rows})
    return out


def _next_turns(connection: Connection, project_id: str, session_ids: list[str]) -> dict[str, int]:
    """The next free turn index of each session that has turns already."""
    out: dict[str, int] = {}
    for chunk in chunks(session_ids):
        rows = connection.execute(
            select(Interaction.session_id, func.max(Interaction.turn_index))
            .where(Interaction.project_id == project_id, Interaction.session_id.in_(list(chunk)))
            .group_by(Interaction.session_id)
        )
        out.update({session_id: highest + 1 for session_id, highest in rows})
    return out


def _table(model: type[Interaction | InteractionSpan | InteractionResponse]) -> Table:
    return cast(Table, model.__table__)
