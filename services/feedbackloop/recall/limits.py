"""Bounds on the calls that cluster a window: TopIssues and GetTrends by TopIssues group.

Such a call reads every complaint vector of its window and of the one before into memory and
clusters them: at 100,000 complaints a window that is two windows of 384-d float32 plus the
clustering's own arrays, and both cores for a second or more. Without a bound, a few of them
at once (a dashboard refreshing, a hostile client) take the server's memory and CPU from
everything else it serves. Two bounds, both checked before any vector is read:

- `refuse_large_windows`: a window holding more complaints than `recall_clustering_max_feedback`
  is refused with INVALID_ARGUMENT naming the request's window field, from an SQL count (no
  row loaded). A window is never cut to fit instead: its counts and groups would silently
  describe less than the window asked for.
- `ClusteringGate`: at most `recall_clustering_concurrency` such calls run at once in a server
  process; one past that waits up to `recall_clustering_wait_seconds` for a slot, then fails
  with RESOURCE_EXHAUSTED and a RetryInfo, instead of queueing on the server's threads.

`ClusteringLimits` holds both for a server process; every such call runs under its `admit`,
which checks the window's size first, then takes a slot.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from sqlalchemy import Select, func

from feedbackloop.errors import InvalidArgument, ResourceExhausted
from feedbackloop.ingestion.repository import FeedbackQuery, feedback_query
from feedbackloop.recall.trends import TrendWindow, totals
from feedbackloop.store.db import Database

# What a refused call is told to wait before retrying: about the time one clustering of a
# 100,000-complaint window takes (README, Benchmarks), so a slot is likely free by then.
RETRY_DELAY_SECONDS = 2


class ClusteringBusy(ResourceExhausted):
    """Every clustering slot stayed taken for the whole wait."""

    def __init__(self, slots: int, waited: float) -> None:
        super().__init__(
            f"this server already runs {slots} clustering call{'s' if slots != 1 else ''} "
            "(TopIssues, GetTrends by issue), its limit, and none ended within "
            f"{waited:g}s; retry in a few seconds"
        )
        self.status_details = (
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=RETRY_DELAY_SECONDS)),
        )


class ClusteringGate:
    """At most `slots` clustering calls at once; each one past that waits up to `wait_seconds`."""

    def __init__(self, slots: int, wait_seconds: float) -> None:
        if slots < 1:
            raise ValueError(f"a clustering gate needs at least one slot (got {slots})")
        if wait_seconds < 0:
            raise ValueError(f"the wait for a clustering slot cannot be negative (got {wait_seconds})")
        self.slots = slots
        self.wait_seconds = wait_seconds
        self._free = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self, time_remaining: float | None = None) -> Iterator[None]:
        """Hold a slot for the block; ClusteringBusy when none comes free within the wait.

        `time_remaining` is the call's deadline (gRPC's `context.time_remaining()`): a client
        that gives up sooner is not waited for past it.
        """
        wait = self.wait_seconds
        if time_remaining is not None:
            wait = max(0.0, min(wait, time_remaining))
        if not self._free.acquire(timeout=wait):
            raise ClusteringBusy(self.slots, wait)
        try:
            yield
        finally:
            self._free.release()


class ClusteringLimits:
    """Both bounds of one server process, shared by every call that clusters a window."""

    def __init__(self, max_complaints: int, gate: ClusteringGate) -> None:
        self.max_complaints = max_complaints
        self.gate = gate

    def complaints_in_store(
        self, db: Database, project_id: str, query: FeedbackQuery, window: TrendWindow
    ) -> tuple[int, int]:
        """The complaints of [start, end) and of [previous_start, start), as `admit` needs them.

        First each window's filtered feedback is counted, which the (project, occurred_at) index
        answers without the complaint rule (about 10 ms for two windows of 100,000 on SQLite). A
        complaint is a feedback, so when neither count is over the bound, neither window's
        complaints are: the two counts are returned, bounds that are all `admit` needs. Only
        past that are the complaints themselves counted (`trends.totals`, the complaint rule per
        row: about 0.2 s over those 200,000 rows). Two counts rather than one select over both
        windows summing a CASE on `start`: SQLite counts an index range without evaluating
        anything per row, and the one select took over twice as long (about 25 ms).
        """
        with db.read() as session:
            current, previous = (
                session.execute(
                    _feedback_count(project_id, dataclasses.replace(query, start=lo, end=hi))
                ).scalar_one()
                for lo, hi in ((window.start, window.end), (window.previous_start, window.start))
            )
        if max(current, previous) <= self.max_complaints:
            return current, previous
        counted = totals(db, project_id, query, window)
        return counted[0].negative, counted[1].negative

    @contextmanager
    def admit(self, field: str, complaints: tuple[int, int], time_remaining: float | None) -> Iterator[None]:
        """Run the block as a clustering call whose request names its window `field`.

        `complaints`: those of the window and of the one before (from `complaints_in_store`, or
        the call's own totals). A window over the bound is refused (`refuse_large_windows`)
        before any slot is waited for; otherwise the block holds a slot of the gate
        (`ClusteringGate.slot`, `time_remaining` the call's deadline).
        """
        refuse_large_windows(field, self.max_complaints, *complaints)
        with self.gate.slot(time_remaining):
            yield


def _feedback_count(project_id: str, query: FeedbackQuery) -> Select[int]:
    return feedback_query(project_id, query).with_only_columns(func.count(), maintain_column_froms=True)


def refuse_large_windows(field: str, limit: int, current: int, previous: int) -> None:
    """InvalidArgument on `field` when the window (`current` complaints) or the one before it
    (`previous`) holds more than `limit`."""
    over = []
    if current > limit:
        over.append(f"holds {current} complaints matching the filter")
    if previous > limit:
        over.append(
            f"the window of the same length before it (the one growth is measured against) holds {previous}"
        )
    if over:
        raise InvalidArgument.single(
            field,
            f"{'; '.join(over)}; this server clusters at most {limit} complaints a window: "
            f"narrow {field} or filter the complaints (e.g. by category, prompt or model version)",
        )
