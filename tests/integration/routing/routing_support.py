"""Helpers for the routing integration tests (imported by name; not a test module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import func, select

from feedbackloop.config import Settings
from feedbackloop.pipeline.jobs import JobQueue, RetryPolicy
from feedbackloop.routing.component import RoutingComponent
from feedbackloop.server import App
from feedbackloop.store.routing_models import DatasetItemRow, PromptPatchRow, ReviewItemRow
from feedbackloop.v1 import (
    common_pb2,
    datasets_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    prompts_pb2_grpc,
    reviews_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)


def files_of(directory: Path) -> list[routing_pb2.PolicyFile]:
    return [
        routing_pb2.PolicyFile(path=str(p.relative_to(directory)), content=p.read_text())
        for p in sorted(directory.rglob("*.yaml"))
    ]


def policy_files(**texts: str) -> list[routing_pb2.PolicyFile]:
    return [routing_pb2.PolicyFile(path=f"{name}.yaml", content=text) for name, text in texts.items()]


class Harness:
    def __init__(
        self, app: App, component: RoutingComponent, metadata: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.app = app
        self.component = component
        self.db = app.db
        self.channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
        self.ingest = ingestion_pb2_grpc.IngestionServiceStub(self.channel)
        self.routing = routing_pb2_grpc.RoutingServiceStub(self.channel)
        self.prompts = prompts_pb2_grpc.PromptServiceStub(self.channel)
        self.datasets = datasets_pb2_grpc.DatasetServiceStub(self.channel)
        self.reviews = reviews_pb2_grpc.ReviewServiceStub(self.channel)
        self.queue = JobQueue(self.db, RetryPolicy(8, 0.01, 0.01), 60)
        self._turn = 0

    @classmethod
    def start(cls, store_url: str, data_dir: Path, embedder: Any = None, **overrides: Any) -> Harness:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "data_dir": data_dir,
            "database_url": store_url,
            "pipeline_enabled": False,
            "policies_dir": None,
        }
        values.update(overrides)
        settings = Settings(**values)
        app = App(settings, embedder=embedder)
        app.start()
        return cls(app, app.routing)

    def close(self) -> None:
        self.channel.close()
        self.app.stop(grace=1.0)

    # --- data ---

    def interaction(
        self,
        session: str = "s1",
        *,
        question: str = "How much is the pro plan?",
        prompt: str = "support-answer",
        model: str = "2024-08-06",
        response: str = "It costs $10.",
    ) -> str:
        self._turn += 1
        reply = self.ingest.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(
                    session_id=session,
                    turn_index=self._turn,
                    prompt=common_pb2.PromptRef(name=prompt, version="1"),
                    model=common_pb2.ModelRef(name="gpt", version=model),
                    input_messages=[
                        common_pb2.ChatMessage(role="system", content="You are support."),
                        common_pb2.ChatMessage(role="user", content=question),
                    ],
                    response=response,
                )
            )
        )
        return reply.interaction_id

    def feedback(self, interaction_id: str, session: str = "s1", **fields: Any) -> str:
        reply = self.ingest.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(
                feedback=common_pb2.Feedback(session_id=session, interaction_id=interaction_id, **fields)
            )
        )
        return reply.feedback_id

    # --- policies ---

    def apply(self, files: list[routing_pb2.PolicyFile], **kwargs: Any) -> routing_pb2.ApplyPoliciesResponse:
        return self.routing.ApplyPolicies(routing_pb2.ApplyPoliciesRequest(files=files, **kwargs))

    def live_revision(self) -> int:
        return self.routing.ListRevisions(routing_pb2.ListRevisionsRequest()).live_revision

    # --- pipeline, driven by hand ---

    def route_pending(self) -> dict[int, str | None]:
        """Run the real index stage (embedding into Milvus Lite), then the route stage, once each."""
        indexing = self.queue.claim("index", 1000)
        if indexing:
            indexed = self.app.index_stage.process(indexing)
            assert all(error is None for error in indexed.values()), indexed
            self.queue.advance([j for j, e in indexed.items() if e is None], "index")
        jobs = self.queue.claim("route", 1000)
        outcomes = self.component.route_stage.process(jobs)
        self.queue.advance([j for j, e in outcomes.items() if e is None], "route")
        return outcomes

    def counts(self) -> dict[str, int]:
        with self.db.read() as session:
            return {
                "patches": session.scalar(select(func.count()).select_from(PromptPatchRow)) or 0,
                "dataset_items": session.scalar(select(func.count()).select_from(DatasetItemRow)) or 0,
                "review_items": session.scalar(select(func.count()).select_from(ReviewItemRow)) or 0,
            }

    def review_items(self) -> list[ReviewItemRow]:
        with self.db.read() as session:
            return list(session.scalars(select(ReviewItemRow).order_by(ReviewItemRow.created_at)))
