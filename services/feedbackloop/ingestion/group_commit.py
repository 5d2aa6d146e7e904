"""Group commit for unary SubmitFeedback: concurrent calls share one transaction.

Each call still gets its ack only after its own rows are committed; what is shared is the
transaction (one BEGIN, one executemany per table, one COMMIT and fsync for every call waiting
at that moment). On SQLite, where writers queue on a single lock anyway, this turns N small
transactions into one and keeps latency flat under concurrency.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from feedbackloop.errors import FeedbackloopError
from feedbackloop.ingestion.repository import Stored, TraceIds, submit_feedback_batch
from feedbackloop.ingestion.validation import FeedbackInput
from feedbackloop.store.db import Database

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    project_id: str
    data: FeedbackInput
    ids: TraceIds
    result: Future[Stored] = field(default_factory=Future)


class GroupCommitter:
    def __init__(self, db: Database, max_batch: int) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._stopped = False
        self._lock = threading.Lock()
        self._started = False

    def submit(self, project_id: str, data: FeedbackInput, ids: TraceIds) -> Stored:
        """Store one event (in whatever transaction is next) and return once it is committed."""
        pending = _Pending(project_id, data, ids)
        with self._lock:
            if self._stopped:
                raise RuntimeError("the ingest writer is stopped")
            if not self._started:
                self._thread.start()
                self._started = True
            self._queue.put(pending)
        return pending.result.result()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if not self._started:
                return
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop_after = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop_after = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop_after:
                return

    def _commit(self, batch: list[_Pending]) -> None:
        by_project: dict[str, list[_Pending]] = {}
        for pending in batch:
            by_project.setdefault(pending.project_id, []).append(pending)
        for project_id, items in by_project.items():
            try:
                outcomes = submit_feedback_batch(self._db, project_id, [(p.data, p.ids) for p in items])
            except Exception as error:  # the store failed as a whole: every waiting call sees it
                for pending in items:
                    pending.result.set_exception(error)
                continue
            for pending, outcome in zip(items, outcomes, strict=True):
                if isinstance(outcome, FeedbackloopError):
                    pending.result.set_exception(outcome)
                else:
                    pending.result.set_result(outcome)
