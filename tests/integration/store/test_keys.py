"""store/keys.py: the project and reviewer rules where keys and projects are created."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.store.db import Database
from feedbackloop.store.models import ApiKey, Project


def _rows(db: Database) -> tuple[int, int]:
    with db.read() as session:
        return (
            session.scalar(select(func.count()).select_from(Project)) or 0,
            session.scalar(select(func.count()).select_from(ApiKey)) or 0,
        )


@pytest.mark.parametrize("project", ["", " ", "acme ", "a/b", "a\x00b", "Acme", "x" * 64])
def test_no_key_for_a_malformed_project(db: Database, project: str) -> None:
    with pytest.raises(ValueError, match=r"is not a valid project id: use 1 to 63 lowercase letters"):
        keys.create_key(db, project, frozenset({Scope.INGEST}))
    with pytest.raises(ValueError, match=r"is not a valid project id"):
        keys.ensure_project(db, project)
    assert _rows(db) == (0, 0)


@pytest.mark.parametrize("reviewer", ["key:0123456789ab", "a b", "x" * 129, "alice\x00"])
def test_no_key_for_a_malformed_reviewer(db: Database, reviewer: str) -> None:
    with pytest.raises(ValueError, match=r"is not a valid reviewer name"):
        keys.create_key(db, "acme", frozenset({Scope.REVIEW}), reviewer=reviewer)
    assert _rows(db) == (0, 0)


def test_a_project_stored_before_the_rule_still_works(db: Database) -> None:
    with db.write_connection() as conn:
        conn.execute(text("INSERT INTO projects (id, created_at) VALUES ('Old Project', CURRENT_TIMESTAMP)"))
    keys.ensure_project(db, "Old Project")  # no error: it exists
    assert _rows(db) == (1, 0)


def test_keys_list_their_reviewer(db: Database) -> None:
    keys.create_key(db, "acme", frozenset({Scope.REVIEW}), reviewer="alice@example.com")
    keys.create_key(db, "acme", frozenset({Scope.INGEST}))
    assert sorted(k.reviewer for k in keys.list_keys(db, "acme")) == ["", "alice@example.com"]
