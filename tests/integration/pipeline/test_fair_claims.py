"""Job claims are fair across projects: one project's backlog delays another's jobs by a bounded
number of batches, never by the size of the backlog."""

from __future__ import annotations

import math
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import insert

from feedbackloop.pipeline.jobs import ClaimedJob, JobQueue, RetryPolicy
from feedbackloop.pipeline.worker import StageWorker
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.models import Feedback, PipelineJob, utcnow

BATCH = 32


def _enqueue(db: Database, project: str, count: int) -> None:
    """`count` pending index jobs for `project`, each with its feedback row."""
    ensure_project(db, project)
    now = utcnow() - timedelta(seconds=1)
    ids = [f"fb_{project}_{i}" for i in range(count)]
    with db.write() as session:
        session.execute(
            insert(Feedback),
            [
                dict(id=fid, project_id=project, session_id="s", source="end_user", payload_hash=fid,
                     attributes={}, occurred_at=now, received_at=now)
                for fid in ids
            ],
        )  # fmt: skip
        session.execute(
            insert(PipelineJob),
            [
                dict(project_id=project, feedback_id=fid, next_attempt_at=now, created_at=now, updated_at=now)
                for fid in ids
            ],
        )


class Recording:
    """A stage that does nothing but remember which projects each batch held."""

    name = "index"
    batch_size = BATCH
    max_wait_seconds = 0.0

    def __init__(self) -> None:
        self.batches: list[Counter[str]] = []

    def process(self, jobs: list[ClaimedJob]) -> dict[int, str | None]:
        self.batches.append(Counter(j.project_id for j in jobs))
        return {j.id: None for j in jobs}


def _queue(db: Database) -> JobQueue:
    return JobQueue(db, RetryPolicy(5, 1.0, 1.0), lease_seconds=60)


@pytest.mark.parametrize("normal_jobs", [10, 40])
def test_a_flooding_project_does_not_delay_a_normal_one_beyond_a_few_batches(
    db: Database, normal_jobs: int
) -> None:
    """3,000 jobs of one project queued before a normal project's: the normal project's jobs are
    all processed within ceil(n / (batch / 2)) batches (the old oldest-first claim needed ~94)."""
    _enqueue(db, "flood", 3000)
    _enqueue(db, "normal", normal_jobs)
    stage = Recording()
    worker = StageWorker(_queue(db), stage, poll_seconds=0.01, wake=threading.Event())
    done = 0
    while done < normal_jobs:
        assert worker.run_once()
        done += stage.batches[-1]["normal"]
    bound = math.ceil(normal_jobs / (BATCH // 2))
    assert len(stage.batches) <= bound, stage.batches
    # The flood still gets every slot the normal project leaves: no batch runs short.
    assert all(sum(batch.values()) == BATCH for batch in stage.batches)
    # Once the normal project is served, the flood has the whole batch again.
    assert worker.run_once()
    assert stage.batches[-1] == Counter({"flood": BATCH})


def test_with_more_projects_waiting_than_a_batch_holds_each_is_served_in_turn(db: Database) -> None:
    _enqueue(db, "flood", 500)
    small = [f"p{n:02d}" for n in range(40)]
    for project in small:
        _enqueue(db, project, 1)
    queue = _queue(db)
    batch = 8
    served: dict[str, int] = {}
    seen: set[int] = set()
    for claim in range(1, 10):
        jobs = queue.claim("index", batch)
        assert len(jobs) == batch
        assert not seen & {j.id for j in jobs}  # a job is never handed out twice
        seen |= {j.id for j in jobs}
        for job in jobs:
            served.setdefault(job.project_id, claim)
        queue.advance([j.id for j in jobs], "index")
    # 41 projects with work, 8 slots per claim: everyone within ceil(41 / 8) = 6 claims.
    assert set(small) <= set(served)
    assert max(served[p] for p in small) <= math.ceil(41 / batch)


def test_jobs_come_back_oldest_first_within_a_project(db: Database) -> None:
    _enqueue(db, "a", 5)
    _enqueue(db, "b", 5)
    queue = _queue(db)
    jobs = queue.claim("index", 6)
    by_project = {p: [j.feedback_id for j in jobs if j.project_id == p] for p in ("a", "b")}
    assert by_project == {"a": ["fb_a_0", "fb_a_1", "fb_a_2"], "b": ["fb_b_0", "fb_b_1", "fb_b_2"]}
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    # What is leased is not claimed again; the rest is.
    rest = queue.claim("index", 10)
    assert sorted(j.feedback_id for j in rest) == ["fb_a_3", "fb_a_4", "fb_b_3", "fb_b_4"]
    assert queue.claim("index", 10) == []


def test_concurrent_claimers_never_share_a_job(store_url: str) -> None:
    """Workers in separate processes (a Database each) claim at once: FOR UPDATE SKIP LOCKED on
    PostgreSQL, one writer at a time on SQLite; every job is claimed exactly once."""
    setup = Database(store_url)
    setup.upgrade()
    for project, count in (("a", 300), ("b", 60), ("c", 5)):
        _enqueue(setup, project, count)
    workers = [Database(store_url) for _ in range(4)]
    claimed: list[list[int]] = [[] for _ in workers]
    start = threading.Barrier(len(workers), timeout=30)

    def work(n: int) -> None:
        queue = _queue(workers[n])
        start.wait()
        while jobs := queue.claim("index", 16):
            claimed[n] += [j.id for j in jobs]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(workers))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        everything = [job_id for ids in claimed for job_id in ids]
        assert len(everything) == len(set(everything)) == 365
    finally:
        for db in (setup, *workers):
            db.dispose()
