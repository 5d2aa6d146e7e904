"""PipelineService: queue counts, the vector index against the store, and the dead letter."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from feedbackloop import auth
from feedbackloop.auth import Scope
from feedbackloop.errors import InvalidArgument
from feedbackloop.ingestion.convert import timestamp
from feedbackloop.ingestion.span_links import WAITING
from feedbackloop.pipeline.jobs import JobQueue
from feedbackloop.recall.drift import ProjectIndexStatus
from feedbackloop.v1 import pipeline_pb2, pipeline_pb2_grpc

SERVICE = "/feedbackloop.v1.PipelineService/"
REQUIRED_SCOPES = {
    SERVICE + "GetPipelineStatus": Scope.READ,
    SERVICE + "ListDeadLetters": Scope.READ,
    SERVICE + "RetryDeadLetters": Scope.ADMIN,
}
MAX_LIMIT = 1000


class PipelineServicer(pipeline_pb2_grpc.PipelineServiceServicer):
    def __init__(
        self, queue: JobQueue, index_status: Callable[[str], ProjectIndexStatus] | None = None
    ) -> None:
        self._queue = queue
        self._index_status = index_status

    def GetPipelineStatus(
        self, request: pipeline_pb2.GetPipelineStatusRequest, context: grpc.ServicerContext
    ) -> pipeline_pb2.GetPipelineStatusResponse:
        project = auth.current_principal().project_for(request.project)
        counts = self._queue.counts(project)
        response = pipeline_pb2.GetPipelineStatusResponse(
            pending_index=counts.get("pending:index", 0),
            pending_route=counts.get("pending:route", 0),
            done=counts.get("done", 0),
            dead=counts.get("dead", 0),
            waiting_for_span=counts.get(WAITING, 0),
        )
        if self._index_status is not None:
            index = self._index_status(project)
            response.index.CopyFrom(
                pipeline_pb2.IndexStatus(
                    expected=index.expected,
                    indexed=index.indexed,
                    missing=index.missing,
                    checked_at=timestamp(index.checked_at),
                    error=index.error,
                )
            )
        return response

    def ListDeadLetters(
        self, request: pipeline_pb2.ListDeadLettersRequest, context: grpc.ServicerContext
    ) -> pipeline_pb2.ListDeadLettersResponse:
        project = auth.current_principal().project_for(request.project)
        limit = request.limit or 100
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidArgument.single("limit", f"must be between 1 and {MAX_LIMIT} (got {request.limit})")
        return pipeline_pb2.ListDeadLettersResponse(
            dead_letters=[
                pipeline_pb2.DeadLetter(
                    job_id=job.id,
                    feedback_id=job.feedback_id,
                    stage=job.stage,
                    attempts=job.attempts,
                    last_error=job.last_error,
                    updated_at=timestamp(job.updated_at),
                )
                for job in self._queue.dead_letters(project, limit)
            ]
        )

    def RetryDeadLetters(
        self, request: pipeline_pb2.RetryDeadLettersRequest, context: grpc.ServicerContext
    ) -> pipeline_pb2.RetryDeadLettersResponse:
        project = auth.current_principal().project_for(request.project)
        job_ids = list(request.job_ids)
        if len(job_ids) > MAX_LIMIT:
            raise InvalidArgument.single("job_ids", f"has {len(job_ids)} ids; the limit is {MAX_LIMIT}")
        # No job has an id outside the store's 32-bit column; comparing one would fail there.
        job_ids = [i for i in job_ids if 0 < i <= 2**31 - 1]
        if request.job_ids and not job_ids:
            return pipeline_pb2.RetryDeadLettersResponse(retried=0)
        retried = self._queue.retry_dead(project, job_ids or None)
        return pipeline_pb2.RetryDeadLettersResponse(retried=retried)
