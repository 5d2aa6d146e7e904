"""Helpers shared by the ingestion integration tests (imported by name; not a test module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select

from feedbackloop.store.db import Database
from feedbackloop.store.models import Feedback, Interaction, PipelineJob
from feedbackloop.v1 import common_pb2, ingestion_pb2


@dataclass(frozen=True)
class Counts:
    interactions: int
    feedback: int
    jobs: int


def counts(db: Database) -> Counts:
    """Rows in the store, read directly (not through the API under test)."""
    with db.read() as session:
        return Counts(
            interactions=session.scalar(select(func.count()).select_from(Interaction)) or 0,
            feedback=session.scalar(select(func.count()).select_from(Feedback)) or 0,
            jobs=session.scalar(select(func.count()).select_from(PipelineJob)) or 0,
        )


def job_feedback_ids(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(PipelineJob.feedback_id)))


def feedback_ids(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(Feedback.id)))


def bad_request(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of the google.rpc.BadRequest in the rich status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            violations.extend((v.field, v.description) for v in request.field_violations)
    return violations


def record(stub: Any, session_id: str, turn_index: int = 0, **fields: Any) -> str:
    response = stub.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(
                session_id=session_id, turn_index=turn_index, response=f"answer {turn_index}", **fields
            )
        )
    )
    return str(response.interaction_id)


def submit(stub: Any, metadata: Any = None, project: str = "", **fields: Any) -> Any:
    return stub.SubmitFeedback(
        ingestion_pb2.SubmitFeedbackRequest(project=project, feedback=common_pb2.Feedback(**fields)),
        metadata=metadata,
    )


def list_all(stub: Any, page_size: int = 500, **filter_fields: Any) -> list[common_pb2.Feedback]:
    """Every feedback matching the filter, following page tokens."""
    items: list[common_pb2.Feedback] = []
    token = ""
    while True:
        page = stub.ListFeedback(
            ingestion_pb2.ListFeedbackRequest(
                filter=common_pb2.FeedbackFilter(**filter_fields), page_size=page_size, page_token=token
            )
        )
        items.extend(page.feedback)
        token = page.next_page_token
        if not token:
            return items
