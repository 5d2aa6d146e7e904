"""Notices a vector index that lost vectors: per project, Milvus against the relational store.

Milvus is derived from SQL, so losing it loses no data, but nothing else would notice: a
dropped or emptied collection (Milvus Lite's files deleted, a server restored from an old
backup, Lite's write-ahead log losing its last unsynced rows to a killed process) still answers
every search, with fewer hits, and the pipeline has nothing pending. So the server counts, at
start and every `index_check_interval_seconds`, for each project the feedback past the index
stage (their vectors were written before the job moved on, so the index must hold them) and
the vectors Milvus holds, and logs a warning naming the project and `recall reindex` when
vectors are missing. `pipeline status` shows the same comparison for the caller's project.

Counting is cheap in the normal case: Milvus Lite's collection statistics give its live rows in
well under a millisecond, while a filtered `count(*)` walks every stored row in Python. So on
Lite, when the collection holds at least as many vectors as every project expects together,
each project is taken as holding its own (`indexed == expected`, not counted one by one); only
a shortfall in all makes it count each project. A Milvus server counts each project (its
filtered `count(*)` is cheap and its statistics still include deleted rows).

Health: the server stays SERVING when vectors are missing (answers still come from the store,
and a reindex repairs the index while serving); the health service name `feedbackloop.index`
turns NOT_SERVING until the index is in step again, for monitoring that wants to alert on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from feedbackloop.pipeline.jobs import STAGES
from feedbackloop.recall.index import FeedbackIndex
from feedbackloop.recall.service import Recall
from feedbackloop.store.db import Database
from feedbackloop.store.models import PipelineJob, utcnow

log = logging.getLogger(__name__)

INDEX_HEALTH_SERVICE = "feedbackloop.index"


@dataclass(frozen=True)
class ProjectIndexStatus:
    """One project's vectors against the feedback that should have them."""

    project_id: str
    expected: int
    indexed: int
    checked_at: datetime
    error: str = ""  # the index could not be counted; `indexed` is then 0 and means nothing

    @property
    def missing(self) -> int:
        return 0 if self.error else max(0, self.expected - self.indexed)

    @property
    def in_step(self) -> bool:
        return not self.error and self.missing == 0


def expected_counts(db: Database) -> dict[str, int]:
    """Per project, the feedback whose job has passed the index stage (done or dead later on)."""
    with db.read() as session:
        rows = session.execute(
            select(PipelineJob.project_id, func.count())
            .where(PipelineJob.stage != STAGES[0])
            .group_by(PipelineJob.project_id)
        )
        return {str(project): int(count) for project, count in rows}


def _indexed_counts(index: FeedbackIndex, expected: dict[str, int], projects: list[str]) -> dict[str, int]:
    if not index.exists():
        return dict.fromkeys(projects, 0)
    try:
        total = index.total_count()
        if total is not None and total >= sum(expected.values()):
            return {p: expected.get(p, 0) for p in projects}
        return {p: index.count(p) for p in projects}
    except Exception:
        # Dropped between the check and the count: the index holds nothing, which is what to
        # report (not the backend's "does not exist" as if the count could not be made).
        if not index.exists():
            return dict.fromkeys(projects, 0)
        raise


class IndexDriftMonitor:
    """Counts and reports; `start()` runs `check()` at once and then every interval."""

    def __init__(
        self,
        db: Database,
        recall: Recall,
        interval_seconds: float,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        self._db = db
        self._recall = recall
        self._interval = interval_seconds
        self._on_health = on_health
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="index-drift", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        # Not waiting past `timeout`: a check counting a large Lite collection must not hold up
        # shutdown; the thread is a daemon and stops at its next wait.
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception as error:  # the store is unreachable: say so, try again later
                if not self._stop.is_set():
                    log.warning(
                        "checking the vector index failed (retried in %.0f s): %s", self._interval, error
                    )
            self._stop.wait(self._interval)

    def measure(self, projects: list[str] | None = None) -> list[ProjectIndexStatus]:
        """The status of `projects` (default: every project with feedback past the index stage)."""
        # The store first: a job passes the index stage only after its vector was written, so
        # every feedback counted here is in Milvus by the time Milvus is counted.
        expected = expected_counts(self._db)
        wanted = sorted(expected) if projects is None else list(projects)
        now = utcnow()
        if not any(expected.get(p, 0) for p in wanted):
            # Nothing should be indexed: no reason to open Milvus (or load the model to do so).
            return [ProjectIndexStatus(p, 0, 0, now) for p in wanted]
        try:
            indexed = _indexed_counts(self._recall.index, expected, wanted)
        except Exception as error:
            return [ProjectIndexStatus(p, expected.get(p, 0), 0, now, error=str(error)) for p in wanted]
        return [ProjectIndexStatus(p, expected.get(p, 0), indexed[p], now) for p in wanted]

    def status(self, project_id: str) -> ProjectIndexStatus:
        (status,) = self.measure([project_id])
        return status

    def check(self) -> list[ProjectIndexStatus]:
        """Measure every project, log what is wrong, and set the index's health."""
        statuses = self.measure()
        if self._stop.is_set():  # the server closed the index under the count: nothing to report
            return statuses
        for s in statuses:
            if s.error:
                log.warning("project %r: the vector index could not be counted: %s", s.project_id, s.error)
            elif s.missing:
                log.warning(
                    "project %r: the vector index holds %d of %d indexed feedback (%d missing); searches "
                    "and aggregates miss them until `feedbackloop recall reindex` (with a key of the "
                    "project) rebuilds them from the store",
                    s.project_id,
                    s.indexed,
                    s.expected,
                    s.missing,
                )
        if self._on_health is not None:
            self._on_health(all(s.in_step for s in statuses))
        return statuses
