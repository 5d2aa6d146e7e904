"""Lasting group identities: centroid matching across windows, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select

from feedbackloop.recall import groups
from feedbackloop.store.issue_models import IssueGroupRow
from feedbackloop.store.models import Project

DAY = datetime(2026, 3, 2, tzinfo=UTC)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _found(centroid: np.ndarray, label: str, earliest: datetime, size: int = 5) -> groups.Found:
    return groups.Found(
        centroid=_unit(centroid), label=label, keywords=(label,), earliest=earliest, size=size
    )


def test_a_group_keeps_its_id_across_windows_and_new_ones_are_added(db: Any) -> None:
    eye = np.eye(8)
    with db.write() as session:
        session.add(Project(id="p"))
    with db.write() as session:
        first = groups.remember(
            session,
            "p",
            [_found(eye[0], "tax", DAY), _found(eye[1], "currency", DAY)],
            DAY + timedelta(days=7),
        )
    assert [g.matched for g in first] == [False, False]
    # Next week: the tax group again (its wording drifted a little), and a new complaint.
    later = DAY + timedelta(days=7)
    with db.write() as session:
        second = groups.remember(
            session,
            "p",
            [_found(eye[2], "pdf", later), _found(eye[0] + 0.2 * eye[3], "tax rate", later)],
            later + timedelta(days=7),
        )
    assert second[1].group_id == first[0].group_id and second[1].matched
    assert second[1].first_seen_at == DAY  # first seen in the first window
    assert not second[0].matched and second[0].group_id not in {g.group_id for g in first}
    with db.read() as session:
        rows = {r.id: r for r in session.scalars(select(IssueGroupRow))}
    assert len(rows) == 3
    tax = rows[first[0].group_id]
    assert (tax.label, tax.last_size) == ("tax rate", 5)
    assert tax.last_seen_at == later + timedelta(days=7)
    # The stored centroid moved toward the new one, staying a unit vector.
    stored = np.frombuffer(tax.centroid, dtype=np.float32)
    assert abs(float(np.linalg.norm(stored)) - 1.0) < 1e-5 and 0 < stored[3] < 0.2


def test_matching_is_one_to_one_and_bounded() -> None:
    eye = np.eye(4, dtype=np.float32)
    stored = np.stack([eye[0], _unit(eye[1] + 0.1 * eye[2])])
    # Two found groups both nearest stored 0: only the closer one takes it.
    found = np.stack([_unit(eye[0] + 0.1 * eye[3]), _unit(eye[0] + 0.3 * eye[3]), eye[2]])
    assert groups.match(found, stored) == {0: 0}
    # Without a bound every stored group is paired, still one to one, with the best total.
    assert groups.match(found, stored, bound=0.0) == {0: 0, 2: 1}


def test_two_windows_remembered_at_once_store_each_new_group_once(db: Any) -> None:
    """The second of two concurrent calls waits for the first and pairs with its groups."""
    eye = np.eye(8)
    with db.write() as session:
        session.add(Project(id="p"))
    found = [_found(eye[0], "tax", DAY), _found(eye[1], "currency", DAY)]
    end = DAY + timedelta(days=7)
    second: list[list[groups.Lasting]] = []

    def remember_in_its_own_transaction() -> None:
        with db.write() as session:
            second.append(groups.remember(session, "p", found, end))

    with db.write() as session:
        first = groups.remember(session, "p", found, end)
        other = threading.Thread(target=remember_in_its_own_transaction)
        other.start()
        other.join(0.5)
        # Without the lock the second call would read no stored group and insert its own.
        assert other.is_alive(), "the second call did not wait for the first one's transaction"
    other.join(10)
    assert not other.is_alive() and len(second) == 1
    assert [g.group_id for g in second[0]] == [g.group_id for g in first]
    assert [g.matched for g in second[0]] == [True, True]
    with db.read() as session:
        assert len(list(session.scalars(select(IssueGroupRow)))) == 2


def test_the_lock_is_per_project() -> None:
    assert groups.lock_key("p") == groups.lock_key("p")
    assert groups.lock_key("p") != groups.lock_key("q")
    assert -(2**63) <= groups.lock_key("p") < 2**63


def test_nearest_names_the_closest_group_above_the_bound(db: Any) -> None:
    eye = np.eye(8)
    with db.write() as session:
        session.add(Project(id="p"))
    with db.write() as session:
        tax, currency = groups.remember(
            session, "p", [_found(eye[0], "tax", DAY), _found(eye[1], "currency", DAY)], DAY
        )
    with db.read() as session:
        near = groups.nearest(
            session, "p", [eye[0] + 0.3 * eye[1], 0.2 * eye[0] + eye[1], eye[0] + eye[2]], 0.8
        )
        # The third is 0.71 alike to both: below the bound, no group.
        assert near == [tax.group_id, currency.group_id, ""]
        assert groups.nearest(session, "p", [eye[0] + eye[2]], 0.7) == [tax.group_id]
        assert groups.nearest(session, "q", [eye[0]], 0.0) == [""]  # another project's groups
        assert groups.nearest(session, "p", [np.ones(4)], 0.0) == [""]  # another dimension
        assert groups.nearest(session, "p", [], 0.0) == []
