"""Readiness: the server reports NOT_SERVING until what it needs answers.

A process binds its port first, so that probes reach it while the model loads (seconds), then
runs its checks in order on a thread, retrying each with a capped backoff: the store, the
embedding model, Milvus. Once all have passed it calls `on_ready` (the server sets its health
to SERVING) and checks nothing more: a Milvus outage later must not take the api out of its
Service, since ingestion does not need Milvus (the pipeline retries instead).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 5.0
# A check still failing is logged again this often (the first failure at once).
REPEAT_LOG_SECONDS = 30.0


@dataclass(frozen=True)
class Check:
    what: str  # "the store", "Milvus at http://...": read as "waiting for <what>"
    run: Callable[[], object]  # raises while not ready


class Readiness:
    def __init__(self, checks: list[Check], on_ready: Callable[[], None], stopping: threading.Event) -> None:
        self._checks = checks
        self._on_ready = on_ready
        self._stopping = stopping
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.waiting_for: str | None = checks[0].what if checks else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ready (True), the server stops, or `timeout` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.is_set() and not self._stopping.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self._ready.wait(0.1 if left is None else min(left, 0.1))
        return self._ready.is_set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def _run(self) -> None:
        started = time.monotonic()
        for check in self._checks:
            self.waiting_for = check.what
            if not self._pass(check):
                return  # stopping
        self.waiting_for = None
        if self._stopping.is_set():
            return
        self._on_ready()
        self._ready.set()
        log.info(
            "ready after %.1f s: %s", time.monotonic() - started, ", ".join(c.what for c in self._checks)
        )

    def _pass(self, check: Check) -> bool:
        delay = FIRST_RETRY_SECONDS
        logged_at = -float("inf")
        while not self._stopping.is_set():
            try:
                check.run()
                return True
            except Exception as error:
                now = time.monotonic()
                if now - logged_at >= REPEAT_LOG_SECONDS:
                    log.warning("not ready: waiting for %s: %s", check.what, error)
                    logged_at = now
            self._stopping.wait(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)
        return False
