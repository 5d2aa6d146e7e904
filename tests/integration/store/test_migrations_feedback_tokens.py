"""Migration 0009 (feedback tokens) on a populated store: up, down and up again."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from feedbackloop.store.db import Database


def test_feedback_tokens_table_comes_and_goes_with_0009(store_url: str) -> None:
    database = Database(store_url)
    try:
        database.upgrade("0008")
        with database.write_connection() as conn:
            conn.execute(text("INSERT INTO projects (id, created_at) VALUES ('acme', CURRENT_TIMESTAMP)"))
            conn.execute(
                text(
                    "INSERT INTO interactions (id, project_id, session_id, turn_index, user_id, user_role, "
                    "application, prompt_name, prompt_version, model_name, model_version, model_parameters, "
                    "input_messages, context_documents, response, latency_ms, prompt_tokens, "
                    "completion_tokens, attributes, payload_hash, trace_id, span_id, occurred_at, received_at) "
                    "VALUES ('in_1', 'acme', 's', 0, '', '', '', '', '', '', '', '{}', '[]', '[]', 'hi', 0, 0, "
                    "0, '{}', 'h', '', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        assert "feedback_tokens" not in inspect(database.write_engine).get_table_names()
        database.upgrade()
        assert database.current_revision() == database.head_revision()
        insert = text(
            "INSERT INTO feedback_tokens (token_hash, project_id, interaction_id, key_id, created_at, expires_at) "
            "VALUES (:hash, 'acme', 'in_1', 'k1', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
        with database.write_connection() as conn:
            conn.execute(insert, {"hash": "a" * 64})
        indexes = {ix["name"] for ix in inspect(database.write_engine).get_indexes("feedback_tokens")}
        assert indexes == {"ix_feedback_tokens_expires_at"}

        command.downgrade(database._alembic_config(), "0008")
        assert "feedback_tokens" not in inspect(database.write_engine).get_table_names()
        database.upgrade()
        with database.write_connection() as conn:
            conn.execute(insert, {"hash": "b" * 64})
            count = conn.execute(text("SELECT count(*) FROM feedback_tokens")).scalar()
            turns = conn.execute(text("SELECT count(*) FROM interactions")).scalar()
        assert (count, turns) == (1, 1)  # the downgrade dropped the first token, kept the turn
    finally:
        database.dispose()
