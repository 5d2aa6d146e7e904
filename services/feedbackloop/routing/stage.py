"""The pipeline's `route` stage: route each claimed job's feedback with the live revision."""

from __future__ import annotations

import logging

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode

from feedbackloop.metrics.instruments import Metrics
from feedbackloop.pipeline.jobs import ClaimedJob
from feedbackloop.routing.revisions import LiveSet
from feedbackloop.routing.router import Router
from feedbackloop.telemetry import context_from_traceparent, tracer

log = logging.getLogger(__name__)


class RouteStage:
    """Implements pipeline.worker.Stage; each job is routed in a span of the trace stored on it."""

    name = "route"

    def __init__(
        self,
        router: Router,
        batch_size: int = 32,
        max_wait_seconds: float = 0.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.router = router
        self.batch_size = batch_size
        self.max_wait_seconds = max_wait_seconds
        self._metrics = metrics

    def process(self, jobs: list[ClaimedJob]) -> dict[int, str | None]:
        outcomes: dict[int, str | None] = {}
        live_by_project: dict[str, LiveSet | None] = {}
        for job in jobs:
            if job.project_id not in live_by_project:
                # One cheap query per project per batch: a revision applied by any process is
                # picked up here without a restart.
                live_by_project[job.project_id] = self.router.live.refresh(job.project_id)
            live = live_by_project[job.project_id]
            token = otel_context.attach(context_from_traceparent(job.traceparent))
            try:
                with tracer().start_as_current_span(
                    "pipeline.route",
                    kind=SpanKind.CONSUMER,
                    attributes={"feedbackloop.feedback_id": job.feedback_id, "pipeline.job_id": job.id},
                    record_exception=False,
                    set_status_on_exception=False,
                ) as span:
                    try:
                        result = self.router.route(job.project_id, job.feedback_id, live)
                        span.set_attribute("routing.revision", result.revision)
                        span.set_attribute("routing.created", result.created)
                        outcomes[job.id] = None
                        if self._metrics is not None and result.routed:
                            self._metrics.routed(job.project_id, result.decisions)
                    except Exception as exc:
                        log.warning("route %s failed: %s", job.feedback_id, exc)
                        span.record_exception(exc)
                        span.set_status(Status(StatusCode.ERROR, str(exc)))
                        outcomes[job.id] = f"{type(exc).__name__}: {exc}"
            finally:
                otel_context.detach(token)
        return outcomes
