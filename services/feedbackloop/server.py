"""Process assembly: store, services, interceptors, health, reflection, pipeline."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from feedbackloop import auth, heap
from feedbackloop.config import Settings
from feedbackloop.ingestion.group_commit import GroupCommitter
from feedbackloop.ingestion.servicer import REQUIRED_SCOPES as INGESTION_SCOPES
from feedbackloop.ingestion.servicer import IngestionServicer
from feedbackloop.ingestion.taxonomy import Taxonomy
from feedbackloop.interceptors import (
    AuthInterceptor,
    CachedKeyResolver,
    ErrorMappingInterceptor,
    TracingInterceptor,
)
from feedbackloop.pipeline.component import PipelineComponent
from feedbackloop.pipeline.jobs import JobQueue, RetryPolicy
from feedbackloop.pipeline.worker import StageWorker
from feedbackloop.recall.embedder import Embedder
from feedbackloop.recall.service import Recall
from feedbackloop.recall.servicer import REQUIRED_SCOPES as RECALL_SCOPES
from feedbackloop.recall.servicer import RecallServicer
from feedbackloop.recall.stage import IndexStage
from feedbackloop.routing.component import PolicyBootstrapError, RoutingComponent
from feedbackloop.routing.similarity import RecallSimilarFeedback
from feedbackloop.store import keys
from feedbackloop.store.db import Database
from feedbackloop.store.statistics import StatisticsRefresher
from feedbackloop.telemetry import setup_tracing
from feedbackloop.v1 import ingestion_pb2_grpc, recall_pb2_grpc

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The server refuses to start; the message says what to change."""


class Component(Protocol):
    """A service (or background worker) the server hosts."""

    @property
    def service_names(self) -> tuple[str, ...]: ...

    @property
    def required_scopes(self) -> dict[str, auth.Scope]: ...

    def register(self, server: grpc.Server) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class GrpcService:
    """A servicer with its registration function and the scopes its methods need."""

    full_name: str
    required_scopes: dict[str, auth.Scope]
    add_to_server: Callable[[grpc.Server], None]

    @property
    def service_names(self) -> tuple[str, ...]:
        return (self.full_name,)

    def register(self, server: grpc.Server) -> None:
        self.add_to_server(server)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class App:
    """One feedbackloop process: `start()` binds and serves, `stop()` drains and closes."""

    def __init__(
        self, settings: Settings, *, embedder: Embedder | None = None, freeze_startup_heap: bool = False
    ) -> None:
        """`embedder` lets several servers in one process (tests, benchmarks) share a loaded model.

        `freeze_startup_heap`: once started and warmed up, exempt what exists from garbage
        collection (`heap.py`); for a process that runs one server, as `serve` does.
        """
        self.settings = settings
        self._freeze_startup_heap = freeze_startup_heap
        self.db = Database(settings.effective_database_url, sqlite_synchronous=settings.sqlite_synchronous)
        self.taxonomy = Taxonomy(max_age_seconds=settings.schema_refresh_seconds)
        self.wake_index = threading.Event()
        self.wake_route = threading.Event()
        self.queue = JobQueue(
            self.db,
            RetryPolicy(
                settings.pipeline_max_attempts,
                settings.pipeline_backoff_seconds,
                settings.pipeline_backoff_max_seconds,
            ),
            settings.pipeline_lease_seconds,
        )
        self.recall = Recall(self.db, embedder or Embedder.from_settings(settings), settings)
        self.committer = GroupCommitter(self.db, settings.stream_batch_size)
        self.statistics = StatisticsRefresher(self.db, settings.sqlite_analyze_interval_seconds)
        ingestion = IngestionServicer(self.db, settings, self.taxonomy, self.committer, self.wake_index.set)
        self.components: list[Component] = [
            GrpcService(
                "feedbackloop.v1.IngestionService",
                INGESTION_SCOPES,
                lambda server: ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(ingestion, server),
            ),
            GrpcService(
                "feedbackloop.v1.RecallService",
                RECALL_SCOPES,
                lambda server: recall_pb2_grpc.add_RecallServiceServicer_to_server(
                    RecallServicer(self.recall), server
                ),
            ),
            PipelineComponent(  # also runs the index drift check (recall/drift.py)
                self.queue,
                self.db,
                self.recall,
                settings.index_check_interval_seconds,
                set_health=lambda name, status: self._health.set(name, status),
            ),
        ]
        self.routing = RoutingComponent(
            self.db,
            settings,
            self.taxonomy,
            similar=RecallSimilarFeedback(self.db, self.recall),
            embed=self.recall.embedder.encode,
            on_committed=self.wake_index.set,  # a review resolution is new feedback
        )
        self.components.append(self.routing)
        self.workers: list[StageWorker] = []
        self.index_stage = IndexStage(
            self.recall, settings.embedding_batch_size, settings.embedding_batch_max_wait_ms / 1000
        )
        self.server: grpc.Server | None = None
        self.port: int = 0
        self._health = health.HealthServicer()
        self._stopping = threading.Event()

    # --- lifecycle ---

    def prepare_store(self) -> None:
        if self.settings.auto_migrate or self.db.is_empty():
            self.db.upgrade()
        current, head = self.db.current_revision(), self.db.head_revision()
        if current != head:
            raise StartupError(
                f"the database schema is at revision {current}, the code needs {head}: run `feedbackloop db upgrade`"
            )

    def anonymous_principal(self) -> auth.Principal | None:
        if self.settings.binds_loopback and self.settings.allow_anonymous_loopback:
            return auth.Principal(self.settings.default_project, auth.ALL_SCOPES, key_id="anonymous")
        return None

    def start(self) -> int:
        setup_tracing()
        self.prepare_store()
        anonymous = self.anonymous_principal()
        if anonymous is not None:
            keys.ensure_project(self.db, anonymous.project_id)
            log.warning(
                "authentication is OFF for keyless requests: this loopback server (%s) serves project '%s' "
                "without an API key. Bind a non-loopback address or set "
                "FEEDBACKLOOP_ALLOW_ANONYMOUS_LOOPBACK=false to require keys.",
                self.settings.host,
                anonymous.project_id,
            )
        elif keys.active_key_count(self.db) == 0:
            raise StartupError(
                f"refusing to serve on {self.settings.host} without authentication: no API key exists. "
                "Create one with `feedbackloop keys create --project P --scope ingest` first."
            )
        scopes: dict[str, auth.Scope] = {}
        for component in self.components:
            scopes.update(component.required_scopes)
        resolver = CachedKeyResolver(lambda digest: keys.principal_for_hash(self.db, digest))
        max_bytes = self.settings.max_message_bytes
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.settings.server_workers, thread_name_prefix="rpc"),
            interceptors=[
                TracingInterceptor(),
                AuthInterceptor(resolver, scopes, anonymous),
                ErrorMappingInterceptor(),
            ],
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
            ],
        )
        names: list[str] = [health.SERVICE_NAME, reflection.SERVICE_NAME]
        for component in self.components:
            component.register(self.server)
            names.extend(component.service_names)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.server)
        reflection.enable_server_reflection(names, self.server)
        address = f"{self.settings.host}:{self.settings.port}"
        if ":" in self.settings.host and not self.settings.host.startswith("["):
            address = f"[{self.settings.host}]:{self.settings.port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise StartupError(f"could not bind {address}")
        try:
            for component in self.components:
                component.start()
        except PolicyBootstrapError as error:
            raise StartupError(str(error)) from error
        if self._freeze_startup_heap and not self.settings.pipeline_enabled:
            heap.freeze_startup_objects()  # before serving, so no request's objects are frozen
        self.server.start()
        self.statistics.start()
        if self.settings.pipeline_enabled:
            self.start_pipeline()  # freezes the heap once the model and the index are loaded
        for name in names:
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("feedbackloop serving on %s:%d", self.settings.host, self.port)
        return self.port

    def start_pipeline(self) -> None:
        """Start the stage workers: indexing, then routing."""
        # Load the model and open the index now, not on the first feedback: that would make the
        # first events wait seconds for their embedding.
        threading.Thread(target=self._warm_up_recall, name="recall-warm-up", daemon=True).start()
        poll = self.settings.pipeline_poll_seconds
        self.workers.append(
            StageWorker(
                self.queue,
                self.index_stage,
                poll_seconds=poll,
                wake=self.wake_index,
                on_advanced=self.wake_route.set,
            )
        )
        self.workers.append(
            StageWorker(self.queue, self.routing.route_stage, poll_seconds=poll, wake=self.wake_route)
        )
        for worker in self.workers:
            worker.start()

    def _warm_up_recall(self) -> None:
        try:
            self.recall.embedder.load()
            if not self._stopping.is_set():
                self.recall.index  # noqa: B018 - opening it is the point
        except Exception as error:  # the pipeline retries; warming up is only an optimisation
            log.warning("recall warm-up failed (the pipeline will retry): %s", error)
        if self._freeze_startup_heap and not self._stopping.is_set():
            heap.freeze_startup_objects()

    def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        self._health.enter_graceful_shutdown()
        if self.server is not None:
            self.server.stop(grace).wait()
        self.committer.stop()
        self.statistics.stop()
        for worker in self.workers:
            worker.stop()
        for component in reversed(self.components):
            component.stop()
        self.recall.close()
        self.db.dispose()

    def wait(self) -> None:
        if self.server is not None:
            self.server.wait_for_termination()


def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM."""
    app = App(settings, freeze_startup_heap=True)
    app.start()
    stopping = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal %d: shutting down", signum)
            threading.Thread(target=app.stop, daemon=True).start()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    app.wait()
