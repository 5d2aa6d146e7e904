"""The pipeline's index stage: embed a batch of new feedback with one model call, upsert it."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import Link

from feedbackloop.pipeline.jobs import ClaimedJob
from feedbackloop.recall.service import Recall
from feedbackloop.telemetry import context_from_traceparent, tracer


class IndexStage:
    name = "index"

    def __init__(self, recall: Recall, batch_size: int, max_wait_seconds: float) -> None:
        self._recall = recall
        self.batch_size = batch_size
        self.max_wait_seconds = max_wait_seconds

    def process(self, jobs: list[ClaimedJob]) -> dict[int, str | None]:
        # One span per job under the trace ingestion stored, so each feedback's trace shows its
        # indexing; the batch span (embedding, upsert) is linked from each of them.
        job_spans = [
            tracer().start_span(
                "pipeline.index",
                context=context_from_traceparent(job.traceparent),
                attributes={"feedbackloop.feedback_id": job.feedback_id, "feedbackloop.job_id": job.id},
            )
            for job in jobs
        ]
        links = [Link(span.get_span_context()) for span in job_spans]
        outcomes: dict[int, str | None] = {}
        try:
            with tracer().start_as_current_span(
                "recall.index_batch", links=links, attributes={"recall.batch_size": len(jobs)}
            ):
                rows = self._recall.load_feedback([job.feedback_id for job in jobs])
                present = [rows[job.feedback_id] for job in jobs if job.feedback_id in rows]
                self._recall.index_feedback(present)
            for job in jobs:
                outcomes[job.id] = (
                    None if job.feedback_id in rows else f"feedback {job.feedback_id} not in the store"
                )
            return outcomes
        except Exception as error:
            for span in job_spans:
                span.record_exception(error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            for span in job_spans:
                span.end()
