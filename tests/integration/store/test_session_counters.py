"""Session counters: never lose a count under concurrent writers, and the 0006 migration
backfills a populated store with the counts the live path would have stored."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from store_support import T0, feedback_input, feedback_row, interaction_input, interaction_row

from feedbackloop.ingestion.repository import (
    TraceIds,
    record_interaction,
    submit_feedback,
    submit_feedback_batch,
)
from feedbackloop.store import session_stats
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.models import Feedback, FeedbackCategory, Interaction

WRITERS = 6
EVENTS_PER_WRITER = 40
TURN_WRITES = 20


def _rows_in_session(db: Database, project: str, session: str) -> list[tuple[int, int, int, str, Any]]:
    with db.read() as s:
        rows = s.execute(
            sa.select(
                Feedback.session_feedback_count,
                Feedback.session_negative_count,
                Feedback.session_turn_count,
                Feedback.thumb,
                Feedback.rating,
            )
            .where(Feedback.project_id == project, Feedback.session_id == session)
            .order_by(Feedback.session_feedback_count)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_concurrent_writers_into_one_session_never_lose_or_share_a_count(store_url: str) -> None:
    """Several processes (one Database each) and threads write into one session at once, in
    single events and batches, while turns are recorded; every count is taken exactly once."""
    setup = Database(store_url)
    setup.upgrade()
    ensure_project(setup, "p")
    interaction_id = record_interaction(setup, "p", interaction_input("hot", 0), TraceIds()).id
    processes = [Database(store_url) for _ in range(3)]
    start = threading.Barrier(WRITERS, timeout=30)
    errors: list[BaseException] = []

    def write_feedback(writer: int) -> None:
        db = processes[writer % len(processes)]
        try:
            start.wait()
            sent = 0
            while sent < EVENTS_PER_WRITER:
                size = 1 + (sent + writer) % 4
                batch = [
                    feedback_input("hot", interaction_id, thumb="down" if (writer + sent + i) % 3 else "up")
                    for i in range(min(size, EVENTS_PER_WRITER - sent))
                ]
                if len(batch) == 1:
                    submit_feedback(db, "p", batch[0], TraceIds())
                else:
                    submit_feedback_batch(db, "p", [(e, TraceIds()) for e in batch])
                sent += len(batch)
        except BaseException as error:
            errors.append(error)

    def write_turns() -> None:
        try:
            start.wait()
            for turn in range(1, TURN_WRITES + 1):
                record_interaction(
                    processes[turn % len(processes)], "p", interaction_input("hot", turn), TraceIds()
                )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write_feedback, args=(w,)) for w in range(WRITERS - 1)]
    threads.append(threading.Thread(target=write_turns))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        rows = _rows_in_session(setup, "p", "hot")
        total = (WRITERS - 1) * EVENTS_PER_WRITER
        assert [r[0] for r in rows] == list(range(1, total + 1))
        negatives = 0
        turns_before = 1
        for count, negative, turns, thumb, _ in rows:
            negatives += thumb == "down"
            assert negative == negatives, count
            assert 1 <= turns_before <= turns <= TURN_WRITES + 1, count  # turns only grow
            turns_before = turns
        with setup.read() as s:
            assert session_stats.current(s, "p", "hot") == session_stats.Counts(
                TURN_WRITES + 1, total, negatives
            )
    finally:
        for db in (setup, *processes):
            db.dispose()


NEW_IN_0006 = {"session_turn_count", "session_feedback_count", "session_negative_count"}
# Columns later revisions add, absent from the 0005 schema too.
NEW_AFTER_0006 = {"span_trace_id", "span_span_id", "span_link"}


def _feedback_0005() -> sa.Table:
    """The feedback table as revision 0005 had it (the model's columns, defaults included,
    less those 0006 and later revisions add), so rows insert into the older schema."""
    columns = [c._copy() for c in Feedback.__table__.columns if c.name not in NEW_IN_0006 | NEW_AFTER_0006]
    return sa.Table("feedback", sa.MetaData(), *columns)


def test_the_migration_backfills_counts_in_received_order_on_a_populated_store(store_url: str) -> None:
    database = Database(store_url)
    try:
        database.upgrade("0005")

        def at(minutes: float) -> datetime:
            return T0 + timedelta(minutes=minutes)

        def turn(project: str, session: str, n: int, minute: float = 0) -> dict[str, Any]:
            return interaction_row(project, session, n) | {"received_at": at(minute)}

        def fb(project: str, fid: str, session: str, received: float, **fields: Any) -> dict[str, Any]:
            return feedback_row(project, fid, session, 0, **fields) | {"received_at": at(received)}

        with database.write_connection() as conn:
            for project in ("p", "q"):
                conn.execute(
                    sa.text(f"INSERT INTO projects (id, created_at) VALUES ('{project}', CURRENT_TIMESTAMP)")
                )
            conn.execute(
                sa.insert(Interaction),
                [
                    turn("p", "a", 0),
                    turn("p", "a", 1),
                    turn("p", "a", 2, minute=2.5),
                    turn("p", "b", 0),
                    turn("p", "c", 0),
                    turn("p", "big", 0),
                    turn("q", "a", 0),
                ],
            )
            feedback = [
                fb("p", "f1", "a", 1, thumb="down"),
                fb("p", "f2", "a", 2, thumb="up"),
                fb("p", "f3", "a", 3),  # categories only: a complaint
                # Received fourth although it says it happened first; a blank correction is no complaint.
                fb("p", "f4", "a", 4, correction=" \n") | {"occurred_at": at(-10)},
                fb("p", "f5", "a", 5, rating=1),
                fb("p", "b1", "b", 1, thumb="up"),
                fb("q", "x1", "a", 1, thumb="down"),
            ]
            # More rows than the migration reads at once, so its paging carries counts across pages.
            feedback += [
                fb("p", f"big{i:05d}", "big", i / 100, thumb="down" if i % 2 else "up") for i in range(2100)
            ]
            blank = {"thumb": "", "rating": None, "correction": ""}  # one set of keys for every row
            conn.execute(sa.insert(_feedback_0005()), [blank | row for row in feedback])
            conn.execute(
                sa.insert(FeedbackCategory), [{"feedback_id": "f3", "category": "wrong", "position": 0}]
            )
        database.upgrade()
        assert database.current_revision() == database.head_revision()

        with database.read() as s:
            stored = {
                fid: (turns, count, negative)
                for fid, turns, count, negative in s.execute(
                    sa.select(
                        Feedback.id,
                        Feedback.session_turn_count,
                        Feedback.session_feedback_count,
                        Feedback.session_negative_count,
                    )
                )
            }
            counters = {
                (project, sid): session_stats.current(s, project, sid)
                for project, sid in s.execute(sa.select(Interaction.project_id, Interaction.session_id))
            }
        assert [stored[f] for f in ("f1", "f2", "f3", "f4", "f5")] == [
            (2, 1, 1),
            (2, 2, 1),
            (3, 3, 2),
            (3, 4, 2),
            (3, 5, 3),
        ]
        assert stored["b1"] == (1, 1, 0)
        assert stored["x1"] == (1, 1, 1)
        big = sorted(v for k, v in stored.items() if k.startswith("big"))
        assert [v[1] for v in big] == list(range(1, 2101))
        assert big[-1] == (1, 2100, 1050)
        assert counters == {
            ("p", "a"): session_stats.Counts(3, 5, 3),
            ("p", "b"): session_stats.Counts(1, 1, 0),
            ("p", "c"): session_stats.Counts(1, 0, 0),
            ("p", "big"): session_stats.Counts(1, 2100, 1050),
            ("q", "a"): session_stats.Counts(1, 1, 1),
        }
        # The live path carries on from the backfilled counters.
        new = submit_feedback(database, "p", feedback_input("a", thumb="down"), TraceIds())
        with database.read() as s:
            row = s.get(Feedback, new.id)
            assert row is not None
            assert (row.session_turn_count, row.session_feedback_count, row.session_negative_count) == (
                3,
                6,
                4,
            )
    finally:
        database.dispose()


def test_one_bump_counts_thousands_of_sessions_and_returns_every_total(store_url: str) -> None:
    """A transaction that touches more sessions than one statement's parameters can carry
    (PostgreSQL takes at most 65,535; each session's row has six) still counts each once, new
    and known sessions alike, and answers each session's total."""
    db = Database(store_url)
    db.upgrade()
    ensure_project(db, "p")
    sessions = [f"s{i:05d}" for i in range(12_000)]
    with db.write_connection() as connection:
        first = session_stats.bump(connection, "p", {s: session_stats.Counts(turns=1) for s in sessions[:10]})
    assert first == {s: session_stats.Counts(turns=1) for s in sessions[:10]}
    deltas = {
        s: session_stats.Counts(turns=2, feedback=i % 3, negative=i % 2) for i, s in enumerate(sessions)
    }
    with db.write_connection() as connection:
        totals = session_stats.bump(connection, "p", deltas)
    expected = {
        s: session_stats.Counts(turns=2 + (i < 10), feedback=i % 3, negative=i % 2)
        for i, s in enumerate(sessions)
    }
    assert totals == expected
    with db.write_connection() as connection:
        assert session_stats.current(connection, "p", sessions[0]) == expected[sessions[0]]
        assert session_stats.current(connection, "p", sessions[-1]) == expected[sessions[-1]]
