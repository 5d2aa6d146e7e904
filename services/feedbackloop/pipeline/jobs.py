"""The job queue over `pipeline_jobs`: claim with a lease, advance, retry with backoff, dead-letter.

PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, so several workers (pods) share the queue;
SQLite serializes writers anyway. A claim is a lease: a worker that dies leaves its jobs to be
claimed again once `locked_until` passes, so no acked event is stranded.

Claims are fair across projects: one worker serves every project, so a claim takes an equal
share of its batch from each project with pending jobs (oldest first within each), and what a
project cannot use goes to the others. When more projects wait than a batch has room for, the
next claim starts after the last project served (round robin), so a job waits at most
ceil(projects with pending jobs / batch size) claims however large another project's backlog.
The projects with pending jobs are found by skipping through an index (one probe per project,
at most a batch's worth), so a claim costs the same behind a backlog of a million jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.orm import Session

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
        # Per stage, the last project a claim served: the next claim starts after it.
        self._cursor: dict[str, str] = {}

    def claim(self, stage: str, limit: int) -> list[ClaimedJob]:
        """Lease up to `limit` due jobs of `stage`, shared fairly among projects; by job id."""
        if limit <= 0:
            return []
        now = utcnow()
        with self._db.write() as session:
            cursor = self._cursor.get(stage)
            projects = _projects_pending(session, stage, after=cursor, upto=None, limit=limit)
            if cursor is not None and len(projects) < limit:
                projects += _projects_pending(
                    session, stage, after=None, upto=cursor, limit=limit - len(projects)
                )
            if not projects:
                return []
            share = max(1, limit // len(projects))
            jobs: list[PipelineJob] = []
            more: list[str] = []  # projects that filled their share and may have more
            for project_id in projects:
                room = min(share, limit - len(jobs))
                if room <= 0:
                    break
                got = self._claim_from(session, stage, project_id, room, now)
                jobs += got
                self._cursor[stage] = project_id
                if len(got) == room:
                    more.append(project_id)
            for project_id in more:  # room others left unused goes to those with more, in turn
                room = limit - len(jobs)
                if room <= 0:
                    break
                jobs += self._claim_from(session, stage, project_id, room, now)
            return [
                ClaimedJob(j.id, j.project_id, j.feedback_id, j.stage, j.attempts, j.traceparent)
                for j in sorted(jobs, key=lambda j: j.id)
            ]

    def _claim_from(
        self, session: Session, stage: str, project_id: str, limit: int, now: datetime
    ) -> list[PipelineJob]:
        stmt = (
            select(PipelineJob)
            .where(
                PipelineJob.status == PENDING,
                PipelineJob.stage == stage,
                PipelineJob.project_id == project_id,
                PipelineJob.next_attempt_at <= now,
                or_(PipelineJob.locked_until.is_(None), PipelineJob.locked_until < now),
            )
            .order_by(PipelineJob.id)
            .limit(limit)
        )
        if not self._db.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        jobs = list(session.scalars(stmt))
        # Leased at once: the session flushes this before its next query, so a second pass over
        # the same project in this claim does not take these jobs again.
        for job in jobs:
            job.locked_until = now + self._lease
        return jobs

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

    def fail(self, job_ids: list[int], error: str) -> int:
        """Schedule a retry with exponential backoff, or dead-letter after the last attempt;
        returns how many went to the dead letter."""
        if not job_ids:
            return 0
        now = utcnow()
        dead = 0
        with self._db.write() as session:
            for job in session.scalars(select(PipelineJob).where(PipelineJob.id.in_(job_ids))):
                job.attempts += 1
                job.last_error = error[:4000]
                job.locked_until = None
                job.updated_at = now
                if job.attempts >= self._retry.max_attempts:
                    job.status = DEAD
                    dead += 1
                else:
                    job.next_attempt_at = now + self._retry.delay(job.attempts)
        return dead

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


def _projects_pending(
    session: Session, stage: str, *, after: str | None, upto: str | None, limit: int
) -> list[str]:
    """Up to `limit` projects with pending jobs in `stage`, in id order, in (after, upto].

    A loose index scan over ix_pipeline_jobs_project_claim: each step asks the index for the
    next project id after the previous one, so the cost is one probe per project returned,
    not one per pending job (a plain DISTINCT reads every pending job's index entry).
    """
    bounds = ""
    if after is not None:
        bounds += " AND project_id > :after"
    if upto is not None:
        bounds += " AND project_id <= :upto"
    sql = (
        "WITH RECURSIVE p(project_id, n) AS ("
        " SELECT (SELECT MIN(project_id) FROM pipeline_jobs"
        f"  WHERE status = :status AND stage = :stage{bounds}), 1"
        " UNION ALL"
        " SELECT (SELECT MIN(j.project_id) FROM pipeline_jobs AS j"
        "  WHERE j.status = :status AND j.stage = :stage AND j.project_id > p.project_id"
        + (" AND j.project_id <= :upto" if upto is not None else "")
        + "), p.n + 1 FROM p WHERE p.project_id IS NOT NULL AND p.n < :limit"
        ") SELECT project_id FROM p WHERE project_id IS NOT NULL"
    )
    params: dict[str, object] = {"status": PENDING, "stage": stage, "limit": limit}
    if after is not None:
        params["after"] = after
    if upto is not None:
        params["upto"] = upto
    return [row[0] for row in session.execute(text(sql), params)]
