"""The Alembic migrations build exactly the schema the models declare, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import feedbackloop.store.routing_models  # noqa: F401  (registers the routing tables on Base)
from feedbackloop.store.db import Database
from feedbackloop.store.models import Base


def test_migrated_schema_matches_the_models(db: Database) -> None:
    with db.write_engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_feedback_session_index_covers_time(db: Database) -> None:
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(db.read_engine).get_indexes("feedback")}
    assert indexes["ix_feedback_project_session_occurred"] == ["project_id", "session_id", "occurred_at"]
    assert "ix_feedback_project_session" not in indexes
