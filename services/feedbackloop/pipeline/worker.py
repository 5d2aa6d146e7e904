"""Pipeline workers: one thread per stage, each claiming batches of jobs from the queue.

A stage processes a batch and reports, per job, None (done) or an error text (retry later).
An exception from the stage fails the whole batch, so a Milvus or model outage only delays
jobs; they are retried with backoff and end in the dead letter only after the last attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from feedbackloop.metrics.instruments import DEAD_LETTERED, DONE, RETRIED, Metrics
from feedbackloop.pipeline.jobs import ClaimedJob, JobQueue

log = logging.getLogger(__name__)


class Stage(Protocol):
    name: str
    batch_size: int
    max_wait_seconds: float

    def process(self, jobs: list[ClaimedJob]) -> dict[int, str | None]:
        """Per job id: None when done, else the error to record."""
        ...


class StageWorker:
    def __init__(
        self,
        queue: JobQueue,
        stage: Stage,
        *,
        poll_seconds: float,
        wake: threading.Event,
        on_advanced: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
        self._queue = queue
        self._metrics = metrics
        self._stage = stage
        self._poll = poll_seconds
        self.wake = wake
        self._on_advanced = on_advanced
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{self._stage.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        self.request_stop()
        return self.join(timeout)

    def request_stop(self) -> None:
        """Claim nothing more; the batch in hand is finished (or abandoned by `join`'s timeout)."""
        self._stopping.set()
        self.wake.set()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` for the loop to end; False when a batch is still being processed.

        An abandoned batch is safe: its jobs stay leased until the lease expires and are then
        claimed again, and every stage is idempotent.
        """
        if self._thread is not None:
            self._thread.join(max(timeout, 0.0))
            return not self._thread.is_alive()
        return True

    @property
    def name(self) -> str:
        return self._stage.name

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self.run_once():
                    self.wake.wait(self._poll)
                    self.wake.clear()
            except Exception:  # the loop must survive a store hiccup; jobs stay leased and return
                log.exception("pipeline %s: unexpected error; retrying", self._stage.name)
                self._stopping.wait(self._poll * 5)

    def run_once(self) -> bool:
        """Claim and process one batch; False when there was nothing to do."""
        stage = self._stage
        jobs = self._queue.claim(stage.name, stage.batch_size)
        if not jobs:
            return False
        deadline = time.monotonic() + stage.max_wait_seconds
        while len(jobs) < stage.batch_size and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.wake.wait(min(remaining, self._poll))
            self.wake.clear()
            jobs.extend(self._queue.claim(stage.name, stage.batch_size - len(jobs)))
        self._process(jobs)
        return True

    def _process(self, jobs: list[ClaimedJob]) -> None:
        started = time.perf_counter()
        ids = [job.id for job in jobs]
        try:
            outcomes = self._stage.process(jobs)
        except Exception as error:
            log.warning("pipeline %s: batch of %d failed: %s", self._stage.name, len(jobs), error)
            dead = self._queue.fail(ids, f"{type(error).__name__}: {error}")
            self._record(started, done=0, failed=len(ids), dead=dead)
            return
        done = [job_id for job_id in ids if outcomes.get(job_id, "no outcome reported") is None]
        failures: dict[str, list[int]] = {}
        for job_id in ids:
            error_text = outcomes.get(job_id, "no outcome reported")
            if error_text is not None:
                failures.setdefault(error_text, []).append(job_id)
        self._queue.advance(done, self._stage.name)
        dead = sum(self._queue.fail(failed, error_text) for error_text, failed in failures.items())
        self._record(started, done=len(done), failed=len(ids) - len(done), dead=dead)
        if done:
            self._on_advanced()

    def _record(self, started: float, *, done: int, failed: int, dead: int) -> None:
        if self._metrics is not None:
            self._metrics.batch(
                self._stage.name,
                time.perf_counter() - started,
                {DONE: done, RETRIED: failed - dead, DEAD_LETTERED: dead},
            )
