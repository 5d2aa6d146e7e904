"""The pipeline's index stage: embed a batch of new feedback with one model call, upsert it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span

from feedbackloop.metrics.instruments import Metrics
from feedbackloop.pipeline.jobs import ClaimedJob
from feedbackloop.recall.service import Recall
from feedbackloop.telemetry import context_from_traceparent, tracer

T = TypeVar("T")


class IndexStage:
    name = "index"

    def __init__(
        self, recall: Recall, batch_size: int, max_wait_seconds: float, metrics: Metrics | None = None
    ) -> None:
        self._recall = recall
        self.batch_size = batch_size
        self.max_wait_seconds = max_wait_seconds
        self._metrics = metrics

    def process(self, jobs: list[ClaimedJob]) -> dict[int, str | None]:
        # Each feedback's own trace (the one ingestion stored) gets a `pipeline.index` span with
        # the batch's `recall.embed` and `milvus.upsert` steps beneath it: the steps are shared
        # by the batch, so every member's trace shows the same timings and the batch size.
        job_spans = {
            job.id: tracer().start_span(
                "pipeline.index",
                context=context_from_traceparent(job.traceparent),
                attributes={"feedbackloop.feedback_id": job.feedback_id, "feedbackloop.job_id": job.id},
            )
            for job in jobs
        }
        try:
            rows = self._recall.load_feedback([job.feedback_id for job in jobs])
            present = [rows[job.feedback_id] for job in jobs if job.feedback_id in rows]
            if present:
                started = time.perf_counter()
                vectors = self._step(
                    "recall.embed", job_spans, len(present), lambda: self._recall.embed_feedback(present)
                )
                embedded = time.perf_counter()
                self._step(
                    "milvus.upsert",
                    job_spans,
                    len(present),
                    lambda: self._recall.upsert_feedback(present, vectors),
                )
                if self._metrics is not None:  # feedback is counted once it is in the loop
                    # (the index times its own Milvus calls: `milvus_timing`)
                    self._metrics.embedded(len(present), embedded - started)
                    self._metrics.feedback_received(present)
            return {
                job.id: None if job.feedback_id in rows else f"feedback {job.feedback_id} is not in the store"
                for job in jobs
            }
        except Exception as error:
            for span in job_spans.values():
                span.record_exception(error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            for span in job_spans.values():
                span.end()

    @staticmethod
    def _step(name: str, parents: dict[int, Span], batch_size: int, work: Callable[[], T]) -> T:
        start = time.time_ns()
        error: Exception | None = None
        try:
            return work()
        except Exception as exc:
            error = exc
            raise
        finally:
            end = time.time_ns()
            for parent in parents.values():
                span = tracer().start_span(
                    name,
                    context=trace.set_span_in_context(parent),
                    start_time=start,
                    attributes={"recall.batch_size": batch_size},
                )
                if error is not None:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
                span.end(end_time=end)
