"""Keeps SQLite's planner statistics current while the server runs (`Database.refresh_statistics`).

A store starts empty and grows; statistics taken once would describe the empty tables. The
refresher runs at start and then every interval on a daemon thread. A failure is logged and
tried again at the next interval: stale statistics cost speed, never correctness.
"""

from __future__ import annotations

import logging
import threading

from feedbackloop.store.db import Database

log = logging.getLogger(__name__)


class StatisticsRefresher:
    def __init__(self, db: Database, interval_seconds: float) -> None:
        self._db = db
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._db.is_sqlite and self._interval > 0

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sqlite-statistics", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._db.refresh_statistics()
            except Exception as error:
                log.warning(
                    "refreshing SQLite statistics failed (retried in %.0f s): %s", self._interval, error
                )
            self._stop.wait(self._interval)
