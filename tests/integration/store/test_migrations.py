"""The Alembic migrations build exactly the schema the models declare, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from feedbackloop.store import (
    issue_models,  # noqa: F401  (registers its table on Base.metadata)
    otlp_models,  # noqa: F401  (registers its table on Base.metadata)
)
from feedbackloop.store.db import Database
from feedbackloop.store.models import Base
from feedbackloop.store.routing_models import PromptState


def test_migrated_schema_matches_the_models(db: Database) -> None:
    with db.write_engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_feedback_session_index_covers_time(db: Database) -> None:
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(db.read_engine).get_indexes("feedback")}
    assert indexes["ix_feedback_project_session_occurred"] == ["project_id", "session_id", "occurred_at"]
    assert "ix_feedback_project_session" not in indexes


def test_upgrading_a_populated_store_keeps_its_rows(store_url: str) -> None:
    """The migrations after 0002 run on a store with data in it, as an upgrade in place does."""
    database = Database(store_url)
    try:
        database.upgrade("0002")
        with database.write_connection() as conn:
            conn.execute(text("INSERT INTO projects (id, created_at) VALUES ('p', CURRENT_TIMESTAMP)"))
            conn.execute(
                text(
                    "INSERT INTO prompts (id, project_id, name, production_version, latest_version, updated_at) "
                    "VALUES ('pr_1', 'p', 'support-answer', 3, 4, CURRENT_TIMESTAMP)"
                )
            )
        database.upgrade()
        assert database.current_revision() == database.head_revision()
        with database.read() as session:
            state = session.scalars(select(PromptState)).one()
        assert (state.name, state.production_version, state.latest_version) == ("support-answer", 3, 4)
        assert state.removed_in_revision is None  # served, as before the upgrade
    finally:
        database.dispose()
