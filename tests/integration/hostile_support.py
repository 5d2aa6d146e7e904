"""A server with something in every table, for the bad-input and fuzz tests (not a test module).

The example policy set is applied (a prompt, a dataset, review queues), one interaction and one
feedback are stored, and `row_counts` reads every table the store defines, so a test can check
that a refused request changed nothing anywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import select

from feedbackloop.config import Settings
from feedbackloop.server import App
from feedbackloop.store.db import Database
from feedbackloop.store.models import Base
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc, routing_pb2, routing_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
DATASET = "support-corrections"
QUEUE = "quality-review"
PROMPT = "support-answer"
SESSION = "s-hostile"


def example_policy_files() -> list[routing_pb2.PolicyFile]:
    root = REPO / "policies"
    return [
        routing_pb2.PolicyFile(path=str(p.relative_to(root)), content=p.read_text())
        for p in sorted(root.glob("*.yaml"))
    ]


@dataclass
class Loaded:
    """A started app with the example policies live and one interaction and feedback stored."""

    app: App
    channel: grpc.Channel
    interaction_id: str
    feedback_id: str

    @property
    def db(self) -> Database:
        return self.app.db

    def stub(self, stub_class: Any) -> Any:
        return stub_class(self.channel)


def start_loaded(store_url: str, data_dir: Path, embedder: Any = None, **overrides: Any) -> Loaded:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "database_url": store_url,
        "pipeline_enabled": False,
        "policies_dir": None,
    }
    values.update(overrides)
    app = App(Settings(**values), embedder=embedder)
    app.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
    routing = routing_pb2_grpc.RoutingServiceStub(channel)
    routing.ApplyPolicies(routing_pb2.ApplyPoliciesRequest(files=example_policy_files()))
    ingest = ingestion_pb2_grpc.IngestionServiceStub(channel)
    interaction_id = ingest.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(
                session_id=SESSION,
                turn_index=0,
                prompt=common_pb2.PromptRef(name=PROMPT, version="1"),
                model=common_pb2.ModelRef(name="gpt", version="2024-08-06"),
                input_messages=[common_pb2.ChatMessage(role="user", content="How much is Pro?")],
                response="It costs $10.",
            )
        )
    ).interaction_id
    feedback_id = ingest.SubmitFeedback(
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=common_pb2.Feedback(
                interaction_id=interaction_id, thumb=common_pb2.THUMB_DOWN, comment="The price is outdated."
            )
        )
    ).feedback_id
    return Loaded(app, channel, interaction_id, feedback_id)


def row_counts(db: Database) -> dict[str, tuple[int, str]]:
    """Every table the store defines, as (rows, digest of their contents): a refused request
    must neither add nor delete a row, nor change one in place (a status, a lease, a counter)."""
    state: dict[str, tuple[int, str]] = {}
    with db.read() as session:
        for table in sorted(Base.metadata.tables.values(), key=lambda t: t.name):
            rows = session.execute(select(table).order_by(*table.primary_key.columns)).all()
            state[table.name] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    return state
