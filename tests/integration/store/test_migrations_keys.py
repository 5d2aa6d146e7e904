"""Migration 0005 on a store with keys in it: they keep working, with no reviewer identity."""

from __future__ import annotations

from sqlalchemy import text

from feedbackloop import auth
from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.store.db import Database


def test_keys_made_before_0005_review_as_their_key_id(store_url: str) -> None:
    database = Database(store_url)
    try:
        database.upgrade("0004")
        key = "fbl_0123456789ab_secret"
        with database.write_connection() as conn:
            conn.execute(text("INSERT INTO projects (id, created_at) VALUES ('acme', CURRENT_TIMESTAMP)"))
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, project_id, key_hash, scopes, description, created_at) "
                    "VALUES ('0123456789ab', 'acme', :hash, 'ingest admin', 'old', CURRENT_TIMESTAMP)"
                ),
                {"hash": auth.hash_key(key)},
            )
        database.upgrade()
        assert database.current_revision() == database.head_revision()
        principal = keys.principal_for_hash(database, auth.hash_key(key))
        assert principal == auth.Principal(
            "acme", frozenset({Scope.INGEST, Scope.ADMIN}), key_id="0123456789ab", reviewer=""
        )
        assert principal.reviewer_identity == "key:0123456789ab"
        (info,) = keys.list_keys(database, "acme")
        assert (info.reviewer, info.description) == ("", "old")
        # A key made after the upgrade carries its reviewer.
        named = keys.create_key(database, "acme", frozenset({Scope.REVIEW}), reviewer="alice")
        assert keys.principal_for_hash(database, auth.hash_key(named)).reviewer == "alice"  # type: ignore[union-attr]
    finally:
        database.dispose()
