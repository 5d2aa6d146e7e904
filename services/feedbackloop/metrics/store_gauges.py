"""Gauges read from the store: pipeline queue depth and age, dead letters, review queues, patches.

They are observable gauges: nothing is counted per event; when a reader collects (a scrape, an
OTLP export) the callbacks report the latest reading, and the store is read again only when that
reading is older than FEEDBACKLOOP_METRICS_REFRESH_SECONDS, with a handful of grouped queries
(index-only where the schema allows). The values are store-wide, so every replica reports the
same ones: aggregate them with `max`, not `sum`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from feedbackloop.ingestion.span_links import WAITING
from feedbackloop.pipeline.jobs import DEAD, PENDING, STAGES
from feedbackloop.store.db import Database
from feedbackloop.store.models import PipelineJob, utcnow
from feedbackloop.store.routing_models import PromptPatchRow, ReviewItemRow

log = logging.getLogger(__name__)

PATCH_STATUSES = ("proposed", "applied", "rejected", "rolled_back")
# Jobs held back until the OTLP span their feedback names arrives are reported as a stage of
# their own, ahead of `index`: they wait, but no stage can take them yet.
SPAN_LINK_STAGE = "span_link"
Attributes = tuple[tuple[str, str], ...]


@dataclass
class Reading:
    """One read of the store; each map is keyed by the series' attributes."""

    queue_depth: dict[Attributes, int] = field(default_factory=dict)
    oldest_age: dict[Attributes, float] = field(default_factory=dict)
    dead_letters: dict[Attributes, int] = field(default_factory=dict)
    review_open: dict[Attributes, int] = field(default_factory=dict)
    review_overdue: dict[Attributes, int] = field(default_factory=dict)
    patches: dict[Attributes, int] = field(default_factory=dict)


class StoreGauges:
    """Registers the store-read gauges on `meter` and serves them from a cached reading."""

    def __init__(
        self,
        db: Database,
        meter: Meter,
        *,
        project_label: bool,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._project_label = project_label
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._reading: Reading | None = None
        self._read_at = 0.0
        gauges: list[
            tuple[str, str, str, Callable[[Reading], dict[Attributes, int] | dict[Attributes, float]]]
        ] = [
            (
                "feedbackloop.pipeline.queue.depth",
                "{job}",
                "Jobs waiting in each pipeline stage (pending, due or backing off); span_link: held for their OTLP span.",
                lambda r: r.queue_depth,
            ),
            (
                "feedbackloop.pipeline.queue.oldest_age",
                "s",
                "Age of the oldest job waiting in each stage, since its feedback was stored (0 when none waits).",
                lambda r: r.oldest_age,
            ),
            (
                "feedbackloop.pipeline.dead_letters",
                "{job}",
                "Jobs in the dead letter, by the stage they failed in.",
                lambda r: r.dead_letters,
            ),
            (
                "feedbackloop.review.queue.depth",
                "{item}",
                "Open review items per review queue.",
                lambda r: r.review_open,
            ),
            (
                "feedbackloop.review.overdue",
                "{item}",
                "Open review items past their queue's SLA (due_at passed).",
                lambda r: r.review_overdue,
            ),
            (
                "feedbackloop.prompt.patches",
                "{patch}",
                "Prompt patches by status: proposed (waiting for approval), applied (approved, by hand or auto), rejected, rolled_back.",
                lambda r: r.patches,
            ),
        ]
        for name, unit, description, pick in gauges:
            meter.create_observable_gauge(
                name, callbacks=[self._callback(pick)], unit=unit, description=description
            )

    def _callback(
        self, pick: Callable[[Reading], dict[Attributes, int] | dict[Attributes, float]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            reading = self.reading()
            if reading is None:
                return []
            return [Observation(value, dict(attributes)) for attributes, value in pick(reading).items()]

        return observe

    def reading(self) -> Reading | None:
        """The cached reading, read again when older than the refresh interval; None when the
        store cannot be read (the gauges then report nothing rather than stale zeros)."""
        with self._lock:
            now = self._clock()
            if self._reading is None or now - self._read_at >= self._refresh:
                try:
                    self._reading = self._read()
                    self._read_at = now
                except Exception as error:  # a scrape must not fail because the store is down
                    log.warning("metrics: could not read the store for the gauges: %s", error)
                    self._reading = None
            return self._reading

    def _key(self, project_id: str, *pairs: tuple[str, str]) -> Attributes:
        return ((("project", project_id),) if self._project_label else ()) + pairs

    def _read(self) -> Reading:
        reading = Reading()
        now = utcnow()
        with self._db.read() as session:
            self._read_pipeline(session, reading, now)
            self._read_reviews(session, reading, now)
            for project_id, status, count in session.execute(
                select(PromptPatchRow.project_id, PromptPatchRow.status, func.count()).group_by(
                    PromptPatchRow.project_id, PromptPatchRow.status
                )
            ):
                key = self._key(project_id, ("status", status))
                reading.patches[key] = reading.patches.get(key, 0) + count
        if not self._project_label:  # every status and stage is reported, zeros included
            for status in PATCH_STATUSES:
                reading.patches.setdefault((("status", status),), 0)
            for stage in STAGES:
                key = (("stage", stage),)
                reading.queue_depth.setdefault(key, 0)
                reading.oldest_age.setdefault(key, 0.0)
                reading.dead_letters.setdefault(key, 0)
            span_link = (("stage", SPAN_LINK_STAGE),)
            reading.queue_depth.setdefault(span_link, 0)
            reading.oldest_age.setdefault(span_link, 0.0)
        return reading

    def _read_pipeline(self, session: Session, reading: Reading, now: datetime) -> None:
        # count and min(id) come from ix_pipeline_jobs_project_claim alone; the oldest job is the
        # one with the smallest id (ids grow with insertion), so only it is read from the table.
        rows = session.execute(
            select(
                PipelineJob.project_id,
                PipelineJob.stage,
                PipelineJob.status,
                func.count(),
                func.min(PipelineJob.id),
            )
            .where(PipelineJob.status.in_((PENDING, WAITING, DEAD)))
            .group_by(PipelineJob.status, PipelineJob.stage, PipelineJob.project_id)
        ).all()
        oldest: dict[Attributes, int] = {}
        for project_id, stage, status, count, min_id in rows:
            key = self._key(project_id, ("stage", SPAN_LINK_STAGE if status == WAITING else stage))
            if status == DEAD:
                reading.dead_letters[key] = reading.dead_letters.get(key, 0) + count
                continue
            reading.queue_depth[key] = reading.queue_depth.get(key, 0) + count
            oldest[key] = min(oldest.get(key, min_id), min_id)
        if oldest:
            created: dict[int, datetime] = {
                job_id: at
                for job_id, at in session.execute(
                    select(PipelineJob.id, PipelineJob.created_at).where(PipelineJob.id.in_(oldest.values()))
                )
            }
            for key, job_id in oldest.items():
                at = created.get(job_id)
                reading.oldest_age[key] = max((now - at).total_seconds(), 0.0) if at is not None else 0.0

    def _read_reviews(self, session: Session, reading: Reading, now: datetime) -> None:
        overdue = func.sum(case((ReviewItemRow.due_at < now, 1), else_=0))
        for project_id, queue, count, late in session.execute(
            select(ReviewItemRow.project_id, ReviewItemRow.queue, func.count(), overdue)
            .where(ReviewItemRow.status == "open")
            .group_by(ReviewItemRow.project_id, ReviewItemRow.queue)
        ):
            key = self._key(project_id, ("queue", queue))
            reading.review_open[key] = reading.review_open.get(key, 0) + count
            reading.review_overdue[key] = reading.review_overdue.get(key, 0) + int(late or 0)
