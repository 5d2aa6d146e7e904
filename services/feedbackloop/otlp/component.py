"""The OTLP trace service and the sweep that links or expires feedback waiting for its span.

Hosted by every role that serves the gRPC API. With several `api` replicas each sweeps; the
transitions are claimed row by row (`span_links`), so none happens twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from sqlalchemy import select

from feedbackloop import auth
from feedbackloop.config import Settings
from feedbackloop.ingestion import span_links
from feedbackloop.ingestion.taxonomy import Taxonomy
from feedbackloop.metrics.instruments import Metrics
from feedbackloop.otlp.servicer import REQUIRED_SCOPES, SERVICE_NAME, TraceServicer
from feedbackloop.store.db import Database
from feedbackloop.store.models import SpanLinkWait

log = logging.getLogger(__name__)


def sweep_interval(wait_seconds: float) -> float:
    """A tenth of the wait, within 0.1 to 1 s: an expiry is applied at most that late."""
    return min(1.0, max(0.1, wait_seconds / 10))


class OtlpComponent:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        taxonomy: Taxonomy,
        on_committed: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._on_committed = on_committed or (lambda: None)
        self._servicer = TraceServicer(db, settings, taxonomy, self._on_committed, metrics)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def service_names(self) -> tuple[str, ...]:
        return (SERVICE_NAME,)

    @property
    def required_scopes(self) -> dict[str, auth.Scope]:
        return REQUIRED_SCOPES

    def register(self, server: grpc.Server) -> None:
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self._servicer, server)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="span-links", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sweep_once(self) -> tuple[int, int]:
        """Link or expire what waits now; (linked, expired)."""
        # A read first: the sweep runs several times a second, and a write transaction would
        # take SQLite's write lock from ingestion each time even with nothing waiting.
        with self._db.read() as session:
            if session.scalar(select(SpanLinkWait.feedback_id).limit(1)) is None:
                return 0, 0
        linked, expired = span_links.sweep(self._db, self._settings.span_link_expiry)
        if linked or expired:
            self._on_committed()
        return linked, expired

    def _run(self) -> None:
        interval = sweep_interval(self._settings.span_link_wait_seconds)
        while not self._stop.wait(interval):
            try:
                self.sweep_once()
            except Exception:  # the store is down: the next round tries again
                log.warning("span links: sweep failed; retrying", exc_info=True)
