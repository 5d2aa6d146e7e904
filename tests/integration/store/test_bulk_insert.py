"""store.bulk.insert_rows stores exactly what SQLAlchemy's own insert stores, on each backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
import sqlalchemy as sa

from feedbackloop.store.bulk import insert_rows
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.models import Interaction, InteractionSpan

INTERACTIONS = cast(sa.Table, Interaction.__table__)
SPANS = cast(sa.Table, InteractionSpan.__table__)
# Not UTC on purpose: the column's type decorator converts it, in both paths.
RECEIVED = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))


def _row(i: int) -> dict[str, Any]:
    return {
        "session_id": f"s{i // 3}",
        "turn_index": i % 3,
        "user_id": "u-ß" if i % 2 else "",
        "user_role": "admin",
        "application": "app",
        "prompt_name": "faq",
        "prompt_version": "3",
        "model_name": "gpt-4o",
        "model_version": "gpt-4o-2024-08-06",
        "model_parameters": {"temperature": 0.2, "stop": ["\n"], "nested": {"a": [1, None, True]}},
        "input_messages": [{"role": "user", "content": f"Ünïcode “quotes” {i} \\ \t"}],
        "context_documents": [{"id": "d1", "text": "doc", "score": 0.5}] if i % 2 else [],
        "response": "answer\nline two",
        "latency_ms": 17 * i,
        "prompt_tokens": 40,
        "completion_tokens": 12,
        "attributes": {"k": "v", "emoji": "🙂"},
        "payload_hash": f"{i:064x}",
        "trace_id": f"{i:032x}",
        "span_id": f"{i + 1:016x}",
        "occurred_at": datetime(2026, 3, 1, 12, 0, i, 999999 - i, tzinfo=UTC),
    }


def _raw(db: Database, ids: list[str]) -> list[tuple[Any, ...]]:
    """The stored values as the database holds them (text, not read back through the types)."""
    columns = ", ".join(c.name for c in INTERACTIONS.c if c.name != "id")
    cast_text = "::text" if not db.is_sqlite else ""
    select_list = ", ".join(f"{name}{cast_text}" for name in columns.split(", "))
    with db.read() as session:
        return [
            tuple(
                session.execute(
                    sa.text(f"SELECT {select_list} FROM interactions WHERE id = :id"), {"id": i}
                ).one()
            )
            for i in ids
        ]


def test_bulk_rows_are_stored_exactly_as_sqlalchemy_stores_them(store_url: str) -> None:
    db = Database(store_url)
    db.upgrade()
    ensure_project(db, "p")
    rows = [_row(i) for i in range(6)]
    with db.write_connection() as connection:
        connection.execute(
            sa.insert(INTERACTIONS),
            [{**r, "id": f"core{n}", "project_id": "p", "received_at": RECEIVED} for n, r in enumerate(rows)],
        )
    with db.write_connection() as connection:
        insert_rows(
            connection,
            INTERACTIONS,
            [{**r, "id": f"bulk{n}", "session_id": r["session_id"] + "-b"} for n, r in enumerate(rows)],
            {"project_id": "p", "received_at": RECEIVED},
        )
        insert_rows(
            connection,
            SPANS,
            [
                {"span_id": r["span_id"], "trace_id": r["trace_id"], "interaction_id": f"bulk{n}"}
                for n, r in enumerate(rows)
            ],
            {"project_id": "p"},
        )
    core = _raw(db, [f"core{n}" for n in range(len(rows))])
    bulk = _raw(db, [f"bulk{n}" for n in range(len(rows))])
    session = [c.name for c in INTERACTIONS.c if c.name != "id"].index("session_id")
    assert [r[:session] + r[session + 1 :] for r in bulk] == [r[:session] + r[session + 1 :] for r in core]
    assert [r[session] for r in bulk] == [f"{r[session]}-b" for r in core]
    with db.read() as s:
        read = s.get(Interaction, "bulk1")
        assert read is not None
        assert read.received_at == RECEIVED and read.received_at.tzinfo == UTC
        assert read.model_parameters == rows[1]["model_parameters"]
        assert read.input_messages == rows[1]["input_messages"]
        spans = s.execute(sa.select(SPANS.c.interaction_id).order_by(SPANS.c.interaction_id)).scalars().all()
        assert spans == [f"bulk{n}" for n in range(len(rows))]


def test_a_row_missing_a_column_or_a_shared_value_naming_none_is_refused(store_url: str) -> None:
    db = Database(store_url)
    db.upgrade()
    ensure_project(db, "p")
    incomplete = {k: v for k, v in _row(0).items() if k != "response"}
    with pytest.raises(KeyError, match="response"), db.write_connection() as connection:
        insert_rows(
            connection,
            INTERACTIONS,
            [{**incomplete, "id": "x"}],
            {"project_id": "p", "received_at": RECEIVED},
        )
    with pytest.raises(KeyError, match="no column colour"), db.write_connection() as connection:
        insert_rows(
            connection, SPANS, [{"span_id": "a", "trace_id": "b", "interaction_id": "c"}], {"colour": 1}
        )
    with pytest.raises(ValueError, match="naive"), db.write_connection() as connection:
        insert_rows(
            connection,
            INTERACTIONS,
            [{**_row(0), "id": "y"}],
            {"project_id": "p", "received_at": RECEIVED.replace(tzinfo=None)},
        )
    with db.read() as s:
        assert s.execute(sa.select(sa.func.count()).select_from(INTERACTIONS)).scalar_one() == 0
