"""Planner statistics, and id lookups that stay key lookups whatever the statistics say."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import insert, text
from store_support import feedback_row, interaction_row, query_plan, selects_run_by

from feedbackloop.ingestion.repository import get_feedback_many
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.models import Feedback, Interaction
from feedbackloop.store.statistics import StatisticsRefresher

ROWS = 300


@pytest.fixture
def seeded(db: Database) -> Database:
    for project in ("p1", "p2"):
        ensure_project(db, project)
    with db.write() as session:
        session.execute(insert(Interaction), [interaction_row("p1", "s", 0), interaction_row("p2", "s", 0)])
        session.execute(
            insert(Feedback),
            [feedback_row("p1", f"fb_{i:04d}", "s", i % 50) for i in range(ROWS)]
            + [feedback_row("p2", "fb_other", "s", 0)],
        )
    return db


def test_feedback_lookups_by_id_are_key_lookups_even_without_statistics(seeded: Database) -> None:
    wanted = [f"fb_{i:04d}" for i in range(0, ROWS, 15)] + ["fb_other"]
    # Another project's id is never returned, on either backend.
    assert set(get_feedback_many(seeded, "p1", wanted)) == set(wanted) - {"fb_other"}
    if seeded.is_sqlite:  # the statement's plan, on a store never analyzed
        plans = [
            query_plan(seeded, *select_)
            for select_ in selects_run_by(seeded, lambda: get_feedback_many(seeded, "p1", wanted))
        ]
        feedback_plan = next(p for p in plans if "SEARCH feedback " in p)
        assert "sqlite_autoindex_feedback_1 (id=?)" in feedback_plan, plans


def test_refresh_statistics_analyzes_sqlite_only(seeded: Database) -> None:
    if not seeded.is_sqlite:
        assert seeded.refresh_statistics() is False  # PostgreSQL keeps its own statistics
        return
    assert seeded.refresh_statistics() is True
    with seeded.read() as session:
        indexes = set(session.scalars(text("SELECT idx FROM sqlite_stat1 WHERE tbl = 'feedback'")))
    assert {"ix_feedback_project_occurred", "ix_feedback_project_session_occurred"} <= indexes


def test_refresher_runs_at_start_and_stops_without_waiting_out_its_interval(seeded: Database) -> None:
    refresher = StatisticsRefresher(seeded, interval_seconds=3600)
    if not seeded.is_sqlite:
        assert not refresher.enabled
        return
    refresher.start()
    try:
        deadline = time.monotonic() + 10
        stats = 0
        while time.monotonic() < deadline and not stats:
            with seeded.read() as session:
                tables = session.execute(
                    text("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
                ).all()
                if tables:
                    stats = session.execute(
                        text("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'feedback'")
                    ).scalar_one()
            time.sleep(0.05)
        assert stats > 0
    finally:
        started = time.monotonic()
        refresher.stop()
    assert time.monotonic() - started < 5


def test_an_interval_of_zero_turns_it_off(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("statistics are refreshed on SQLite only")
    assert StatisticsRefresher(db, interval_seconds=60).enabled  # so that the next line can fail
    assert not StatisticsRefresher(db, interval_seconds=0).enabled
