"""Policy events built from stored rows: session stats at the feedback's own time, batched."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert
from store_support import feedback_row, interaction_row, query_plan, selects_run_by

from feedbackloop.routing.events import build_event, build_events
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.lookups import feedback_by_ids
from feedbackloop.store.models import Feedback, FeedbackCategory, Interaction


@pytest.fixture
def seeded(db: Database) -> Database:
    for project in ("p1", "p2"):
        ensure_project(db, project)
    with db.write() as session:
        session.execute(
            insert(Interaction),
            [interaction_row("p1", "a", t) for t in range(3)]
            + [interaction_row("p1", "b", 0), interaction_row("p2", "a", 0)],
        )
        session.execute(
            insert(Feedback),
            [
                feedback_row("p1", "fb_a1", "a", 1, thumb="down"),
                feedback_row("p1", "fb_a2", "a", 2, thumb="up"),
                feedback_row("p1", "fb_a3", "a", 3),  # categories only: a complaint
                feedback_row("p1", "fb_a4", "a", 4, thumb="down"),
                feedback_row("p1", "fb_b1", "b", 1, thumb="up"),
                # Same session id in another project: never counted for p1.
                feedback_row("p2", "fb_x1", "a", 0, thumb="down"),
            ],
        )
        session.execute(
            insert(FeedbackCategory), [{"feedback_id": "fb_a3", "category": "wrong", "position": 0}]
        )
    return db


def _session_stats(events: dict[str, Any], fid: str) -> tuple[int, int, int]:
    s = events[fid]["session"]
    return s["turn_count"], s["feedback_count"], s["negative_count"]


def test_session_stats_count_what_the_store_held_at_each_feedbacks_time(seeded: Database) -> None:
    with seeded.read() as session:
        rows = feedback_by_ids(session, "p1", ["fb_a3", "fb_a1", "fb_b1"])
        events = build_events(session, [rows["fb_a3"], rows["fb_a1"], rows["fb_b1"]])
    assert set(events) == {"fb_a1", "fb_a3", "fb_b1"}
    assert _session_stats(events, "fb_a1") == (3, 1, 1)
    assert _session_stats(events, "fb_a3") == (3, 3, 2)  # a1 down, a2 up, a3 categories
    assert _session_stats(events, "fb_b1") == (1, 1, 0)
    assert events["fb_a3"]["feedback"]["categories"] == ["wrong"]


def test_one_event_equals_its_entry_in_a_batch(seeded: Database) -> None:
    with seeded.read() as session:
        rows = feedback_by_ids(session, "p1", ["fb_a1", "fb_a2", "fb_a3", "fb_a4", "fb_b1"])
        batch = build_events(session, list(rows.values()))
        for fid, fb in rows.items():
            assert build_event(session, fb) == batch[fid]
    assert build_events(session, []) == {}


def test_a_batch_must_hold_one_project(seeded: Database) -> None:
    with seeded.read() as session:
        mixed = [
            *feedback_by_ids(session, "p1", ["fb_a1"]).values(),
            *feedback_by_ids(session, "p2", ["fb_x1"]).values(),
        ]
        with pytest.raises(ValueError, match="one project"):
            build_events(session, mixed)


def test_session_queries_use_the_session_index_not_the_projects_history(seeded: Database) -> None:
    """SQLite once chose (project_id, occurred_at) for the session query and walked every earlier
    feedback of the project per event; the plan must search by session."""
    if seeded.read_engine.dialect.name != "sqlite":
        pytest.skip("query plans are checked on SQLite, whose planner made the bad choice")
    with seeded.read() as session:
        fb = feedback_by_ids(session, "p1", ["fb_a3"])["fb_a3"]
        statements = selects_run_by(seeded, lambda: build_events(session, [fb]))
    session_query = [(s, p) for s, p in statements if "FROM feedback" in s and "session_id IN" in s]
    assert len(session_query) == 1
    plan = query_plan(seeded, *session_query[0])
    assert "ix_feedback_project_session_occurred" in plan, plan
    assert "ix_feedback_project_occurred" not in plan, plan
