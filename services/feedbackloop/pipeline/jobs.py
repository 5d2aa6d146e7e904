"""The job queue over `pipeline_jobs`: claim with a lease, advance, retry with backoff, dead-letter.

PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, so several workers (pods) share the queue;
SQLite serializes writers anyway. A claim is a lease: a worker that dies leaves its jobs to be
claimed again once `locked_until` passes, so no acked event is stranded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select, update

from feedbackloop.store.db import Database
from feedbackloop.store.models import PipelineJob, utcnow

STAGES = ("index", "route")
PENDING, DONE, DEAD = "pending", "done", "dead"


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    project_id: str
    feedback_id: str
    stage: str
    attempts: int
    traceparent: str


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float

    def delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1)))


class JobQueue:
    def __init__(self, db: Database, retry: RetryPolicy, lease_seconds: float) -> None:
        self._db = db
        self._retry = retry
        self._lease = timedelta(seconds=lease_seconds)

    def claim(self, stage: str, limit: int) -> list[ClaimedJob]:
        now = utcnow()
        with self._db.write() as session:
            stmt = (
                select(PipelineJob)
                .where(
                    PipelineJob.status == PENDING,
                    PipelineJob.stage == stage,
                    PipelineJob.next_attempt_at <= now,
                    or_(PipelineJob.locked_until.is_(None), PipelineJob.locked_until < now),
                )
                .order_by(PipelineJob.id)
                .limit(limit)
            )
            if not self._db.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            jobs = list(session.scalars(stmt))
            for job in jobs:
                job.locked_until = now + self._lease
            return [
                ClaimedJob(j.id, j.project_id, j.feedback_id, j.stage, j.attempts, j.traceparent)
                for j in jobs
            ]

    def advance(self, job_ids: list[int], stage: str) -> None:
        """Move jobs past `stage`: to the next stage, or done after the last."""
        if not job_ids:
            return
        index = STAGES.index(stage)
        values: dict[str, object] = {
            "locked_until": None,
            "attempts": 0,
            "last_error": "",
            "updated_at": utcnow(),
        }
        if index + 1 < len(STAGES):
            values["stage"] = STAGES[index + 1]
            values["next_attempt_at"] = utcnow()
        else:
            values["status"] = DONE
        with self._db.write() as session:
            session.execute(
                update(PipelineJob)
                .where(PipelineJob.id.in_(job_ids), PipelineJob.stage == stage, PipelineJob.status == PENDING)
                .values(**values)
            )

    def fail(self, job_ids: list[int], error: str) -> None:
        """Schedule a retry with exponential backoff, or dead-letter after the last attempt."""
        if not job_ids:
            return
        now = utcnow()
        with self._db.write() as session:
            for job in session.scalars(select(PipelineJob).where(PipelineJob.id.in_(job_ids))):
                job.attempts += 1
                job.last_error = error[:4000]
                job.locked_until = None
                job.updated_at = now
                if job.attempts >= self._retry.max_attempts:
                    job.status = DEAD
                else:
                    job.next_attempt_at = now + self._retry.delay(job.attempts)

    def dead_letters(self, project_id: str | None = None, limit: int = 100) -> list[PipelineJob]:
        with self._db.read() as session:
            stmt = select(PipelineJob).where(PipelineJob.status == DEAD).order_by(PipelineJob.id).limit(limit)
            if project_id:
                stmt = stmt.where(PipelineJob.project_id == project_id)
            return list(session.scalars(stmt))

    def retry_dead(self, project_id: str | None = None, job_ids: list[int] | None = None) -> int:
        """Put dead jobs back in the queue at the stage they failed in; returns how many."""
        with self._db.write() as session:
            stmt = update(PipelineJob).where(PipelineJob.status == DEAD)
            if project_id:
                stmt = stmt.where(PipelineJob.project_id == project_id)
            if job_ids:
                stmt = stmt.where(PipelineJob.id.in_(job_ids))
            result = session.execute(
                stmt.values(status=PENDING, attempts=0, next_attempt_at=utcnow(), locked_until=None)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def counts(self, project_id: str | None = None) -> dict[str, int]:
        """Jobs by state: pending per stage, done, dead."""
        with self._db.read() as session:
            stmt = select(PipelineJob.status, PipelineJob.stage, func.count()).group_by(
                PipelineJob.status, PipelineJob.stage
            )
            if project_id:
                stmt = stmt.where(PipelineJob.project_id == project_id)
            counts: dict[str, int] = {}
            for status, stage, count in session.execute(stmt):
                key = f"{status}:{stage}" if status == PENDING else status
                counts[key] = counts.get(key, 0) + count
            return counts
