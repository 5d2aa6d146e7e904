"""Policy events built from stored rows: session stats as stored with each feedback, in ingest
order, so building an event costs the same in a session of one event as in one of thousands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select
from store_support import feedback_input, interaction_input, selects_run_by

from feedbackloop.errors import FeedbackloopError, NotFound
from feedbackloop.ingestion.repository import (
    Stored,
    TraceIds,
    record_interaction,
    submit_feedback,
    submit_feedback_batch,
)
from feedbackloop.policy.validate import validate_texts
from feedbackloop.routing.events import build_event, build_events
from feedbackloop.routing.revisions import LivePolicies
from feedbackloop.routing.router import Router
from feedbackloop.store import session_stats
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.lookups import feedback_by_ids
from feedbackloop.store.models import Base, Feedback


def _turn(db: Database, project: str, session: str, turn: int) -> str:
    return record_interaction(db, project, interaction_input(session, turn), TraceIds()).id


def _feedback(db: Database, project: str, session: str, **fields: Any) -> str:
    return submit_feedback(db, project, feedback_input(session, **fields), TraceIds()).id


@pytest.fixture
def seeded(db: Database) -> tuple[Database, dict[str, str]]:
    for project in ("p1", "p2"):
        ensure_project(db, project)
    for turn in range(3):
        _turn(db, "p1", "a", turn)
    _turn(db, "p1", "b", 0)
    _turn(db, "p2", "a", 0)
    ids = {
        "a1": _feedback(db, "p1", "a", minute=1, thumb="down"),
        "a2": _feedback(db, "p1", "a", minute=2, thumb="up"),
        "a3": _feedback(db, "p1", "a", minute=3, categories=["wrong"]),  # categories only: a complaint
    }
    _turn(db, "p1", "a", 3)  # a fourth turn: counted for what is stored after it
    ids["a4"] = _feedback(db, "p1", "a", minute=4, thumb="down")
    ids["b1"] = _feedback(db, "p1", "b", minute=1, thumb="up")
    # Same session id in another project: never counted for p1.
    ids["x1"] = _feedback(db, "p2", "a", minute=0, thumb="down")
    return db, ids


def _stats(db: Database, project: str, fid: str) -> tuple[int, int, int]:
    with db.read() as session:
        fb = feedback_by_ids(session, project, [fid])[fid]
        s = build_event(session, fb)["session"]
    return s["turn_count"], s["feedback_count"], s["negative_count"]


def test_session_stats_count_what_the_session_held_when_each_feedback_was_stored(
    seeded: tuple[Database, dict[str, str]],
) -> None:
    db, ids = seeded
    assert _stats(db, "p1", ids["a1"]) == (3, 1, 1)
    assert _stats(db, "p1", ids["a2"]) == (3, 2, 1)
    assert _stats(db, "p1", ids["a3"]) == (3, 3, 2)  # a1 down, a2 up, a3 categories
    assert _stats(db, "p1", ids["a4"]) == (4, 4, 3)
    assert _stats(db, "p1", ids["b1"]) == (1, 1, 0)
    assert _stats(db, "p2", ids["x1"]) == (1, 1, 1)
    with db.read() as session:
        assert session_stats.current(session, "p1", "a") == session_stats.Counts(4, 4, 3)
        assert session_stats.current(session, "p2", "a") == session_stats.Counts(1, 1, 1)
        assert session_stats.current(session, "p1", "nothing") == session_stats.Counts()


def test_a_late_event_takes_the_next_place_and_changes_no_earlier_one(
    seeded: tuple[Database, dict[str, str]],
) -> None:
    """Ingest order, not occurred_at: what a policy saw for a1..a4 stays what a backtest sees."""
    db, ids = seeded
    late = _feedback(db, "p1", "a", minute=-30, thumb="down")
    assert _stats(db, "p1", late) == (4, 5, 4)
    assert [_stats(db, "p1", ids[k]) for k in ("a1", "a2", "a3", "a4")] == [
        (3, 1, 1),
        (3, 2, 1),
        (3, 3, 2),
        (4, 4, 3),
    ]


def test_one_transaction_counts_its_events_in_order_and_skips_refused_and_replayed_ones(
    seeded: tuple[Database, dict[str, str]],
) -> None:
    db, _ = seeded
    events = [
        feedback_input("a", thumb="down", idempotency_key="k1"),
        feedback_input("b", thumb="down"),
        feedback_input("nowhere", thumb="down"),  # unknown session: refused, not counted
        feedback_input("a", thumb="up"),
        feedback_input("a", thumb="down", idempotency_key="k1"),  # a replay within the batch
        feedback_input("a", rating=1),
    ]
    outcomes = submit_feedback_batch(db, "p1", [(e, TraceIds()) for e in events])
    assert isinstance(outcomes[2], NotFound)
    stored = [o for o in outcomes if isinstance(o, Stored)]
    assert [o.created for o in stored] == [True, True, True, False, True]
    assert stored[3].id == stored[0].id
    assert [_stats(db, "p1", o.id) for o in (stored[0], stored[2], stored[4])] == [
        (4, 5, 4),
        (4, 6, 4),
        (4, 7, 5),  # a rating of 1 is a complaint
    ]
    assert _stats(db, "p1", stored[1].id) == (1, 2, 1)
    # Submitted again (a client retry): nothing moves.
    again = submit_feedback_batch(db, "p1", [(events[0], TraceIds())])
    assert not isinstance(again[0], FeedbackloopError) and again[0].created is False
    with db.read() as session:
        assert session_stats.current(session, "p1", "a") == session_stats.Counts(4, 7, 5)
        assert session_stats.current(session, "p1", "b") == session_stats.Counts(1, 2, 1)


def test_a_replayed_turn_is_not_counted_again(seeded: tuple[Database, dict[str, str]]) -> None:
    db, _ = seeded
    assert record_interaction(db, "p1", interaction_input("a", 0), TraceIds()).created is False
    with db.read() as session:
        assert session_stats.current(session, "p1", "a").turns == 4


def test_one_event_equals_its_entry_in_a_batch_and_building_them_queries_nothing(
    seeded: tuple[Database, dict[str, str]],
) -> None:
    db, ids = seeded
    wanted = [ids[k] for k in ("a1", "a2", "a3", "a4", "b1")]
    with db.read() as session:
        rows = feedback_by_ids(session, "p1", wanted)
        batch: dict[str, Any] = {}
        statements = selects_run_by(db, lambda: batch.update(build_events(session, list(rows.values()))))
        assert statements == []
        for fid, fb in rows.items():
            assert build_event(session, fb) == batch[fid]
        assert batch[ids["a3"]]["feedback"]["categories"] == ["wrong"]
        assert build_events(session, []) == {}


POLICIES = """
apiVersion: feedbackloop/v1
kind: ReviewQueue
metadata: {name: triage}
spec: {sla: 24h, lease: 30m}
---
apiVersion: feedbackloop/v1
kind: RoutingPolicy
metadata: {name: unhappy-session}
spec:
  when: session.negative_count >= 3 && session.turn_count > 0 && feedback.thumb == "down"
  actions:
    - human_review: {queue: triage}
"""


@contextmanager
def _rows_loaded() -> Iterator[list[str]]:
    """The class name of every ORM row loaded while the block runs."""
    loaded: list[str] = []

    def on_load(target: Any, context: Any) -> None:
        loaded.append(type(target).__name__)

    event.listen(Base, "load", on_load, propagate=True)
    try:
        yield loaded
    finally:
        event.remove(Base, "load", on_load)


def test_routing_an_event_reads_as_much_in_a_session_of_one_as_in_one_of_hundreds(db: Database) -> None:
    """Routing used to load every earlier feedback of the session for each event: the rows it
    reads (and so its time) grew with the session, quadratically over the session's life."""
    ensure_project(db, "p")
    policy_set, errors = validate_texts([("policies.yaml", POLICIES)])
    assert policy_set is not None, errors
    live = LivePolicies(db)
    live.apply("p", policy_set, expected_revision=None, applied_by="test")
    router = Router(db, live)
    work: dict[int, tuple[int, list[str]]] = {}
    for earlier in (0, 300):
        session_id = f"s{earlier}"
        interaction_id = _turn(db, "p", session_id, 0)
        history = [feedback_input(session_id, interaction_id, thumb="down") for _ in range(earlier)]
        submit_feedback_batch(db, "p", [(e, TraceIds()) for e in history])
        target = _feedback(db, "p", session_id, interaction_id=interaction_id, thumb="up")
        with _rows_loaded() as loaded:
            statements = selects_run_by(db, lambda fid=target: router.route("p", fid))  # type: ignore[misc]
        work[earlier] = (len(statements), sorted(loaded))
        assert _stats(db, "p", target) == (1, earlier + 1, earlier)
    assert work[300] == work[0]
    assert work[0][1].count("Feedback") == 1  # the routed feedback itself
    with db.read() as session:
        assert session.scalar(select(Feedback.session_negative_count).where(Feedback.id == target)) == 300
