"""Process assembly: store, services, interceptors, health, reflection, pipeline.

Which of them a process hosts is its role's (`roles.py`); this module builds what is listed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import OperationalError

from feedbackloop import auth, feedback_tokens, heap, identity
from feedbackloop.binding import bind_failure, grpc_address
from feedbackloop.config import Settings
from feedbackloop.console.app import ConsoleConfig
from feedbackloop.console.runner import ConsoleBindError, ConsoleServer, target_for
from feedbackloop.decoding import DecodingInterceptor
from feedbackloop.ingestion.group_commit import GroupCommitter
from feedbackloop.ingestion.servicer import REQUIRED_SCOPES as INGESTION_SCOPES
from feedbackloop.ingestion.servicer import IngestionServicer
from feedbackloop.ingestion.taxonomy import Taxonomy
from feedbackloop.interceptors import (
    AuthInterceptor,
    CachedKeyResolver,
    ErrorMappingInterceptor,
    MetricsInterceptor,
    TracingInterceptor,
)
from feedbackloop.metrics import MetricsBindError, ServerMetrics
from feedbackloop.otlp.component import OtlpComponent
from feedbackloop.pipeline.component import PipelineComponent
from feedbackloop.pipeline.jobs import JobQueue, RetryPolicy
from feedbackloop.pipeline.worker import StageWorker
from feedbackloop.readiness import Check, Readiness
from feedbackloop.recall.embedder import Embedder
from feedbackloop.recall.service import Recall
from feedbackloop.recall.servicer import REQUIRED_SCOPES as RECALL_SCOPES
from feedbackloop.recall.servicer import RecallServicer
from feedbackloop.recall.stage import IndexStage
from feedbackloop.roles import Part, RoleError, parts_for
from feedbackloop.routing.component import PolicyBootstrapError, RoutingComponent
from feedbackloop.routing.similarity import RecallSimilarFeedback
from feedbackloop.store import keys
from feedbackloop.store.db import Database, safe_url
from feedbackloop.store.statistics import StatisticsRefresher
from feedbackloop.telemetry import setup_tracing
from feedbackloop.v1 import ingestion_pb2_grpc, recall_pb2_grpc

log = logging.getLogger(__name__)

# gRPC cancels the calls still running when the grace period ends; they and the pipeline's
# batches get this long after it to wind down, and closing the store and index this long more.
# Past that, `stop` stops waiting: whatever still runs is abandoned (nothing acked is at risk:
# an ack follows a commit, and an abandoned pipeline batch is retried from its lease).
CANCEL_MARGIN_SECONDS = 1.0
CLOSE_MARGIN_SECONDS = 2.0
# `serve` exits this long after a clean stop even if something at interpreter exit blocks.
EXIT_MARGIN_SECONDS = 2.0


class StartupError(RuntimeError):
    """The server refuses to start; the message says what to change."""


class Component(Protocol):
    """A service (or background worker) the server hosts."""

    @property
    def service_names(self) -> tuple[str, ...]: ...

    @property
    def required_scopes(self) -> Mapping[str, auth.Scope | None]: ...

    def register(self, server: grpc.Server) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class GrpcService:
    """A servicer with its registration function and the scopes its methods need."""

    full_name: str
    required_scopes: Mapping[str, auth.Scope | None]  # None: any valid key
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
    """One feedbackloop process: `start()` binds and serves, `stop()` drains and closes.

    It hosts the parts of its role (`settings.role`, see `roles.py`): the gRPC services, the
    pipeline, or both.
    """

    def __init__(
        self, settings: Settings, *, embedder: Embedder | None = None, freeze_startup_heap: bool = False
    ) -> None:
        """`embedder` lets several servers in one process (tests, benchmarks) share a loaded model.

        `freeze_startup_heap`: once started and warmed up, exempt what exists from garbage
        collection (`heap.py`); for a process that runs one server, as `serve` does.
        """
        self.settings = settings
        self._freeze_startup_heap = freeze_startup_heap
        try:
            self.parts = parts_for(settings.role, pipeline_enabled=settings.pipeline_enabled)
        except RoleError as error:
            raise StartupError(str(error)) from error
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
        # Every role has its metrics (FEEDBACKLOOP_METRICS_PORT, OTLP), like its health service.
        self.telemetry = ServerMetrics.build(
            settings,
            self.db,
            categories_for=self.taxonomy.categories_for,
            prompts_for=lambda project: self.routing.known_prompts(project),
        )
        self.metrics = self.telemetry.metrics
        if self.metrics.enabled:
            self.recall.observe_milvus = self.metrics.milvus
        self.routing = RoutingComponent(
            self.db,
            settings,
            self.taxonomy,
            similar=RecallSimilarFeedback(self.db, self.recall),
            embed=self.recall.embedder.encode,
            on_committed=self.wake_index.set,  # a review resolution is new feedback
            metrics=self.metrics,
        )
        # The hosted components, in start order; the role picks which (the pipeline stages are
        # started apart, see `start_pipeline`).
        builders: dict[Part, Callable[[], Component]] = {
            Part.INGESTION: self._ingestion_service,
            Part.IDENTITY: lambda: GrpcService(
                identity.SERVICE_NAME, identity.REQUIRED_SCOPES, identity.add_to_server
            ),
            Part.RECALL: lambda: GrpcService(
                "feedbackloop.v1.RecallService",
                RECALL_SCOPES,
                lambda server: recall_pb2_grpc.add_RecallServiceServicer_to_server(
                    RecallServicer(self.recall), server
                ),
            ),
            Part.PIPELINE_STATUS: lambda: PipelineComponent(  # also runs the index drift check
                self.queue,
                self.db,
                self.recall,
                settings.index_check_interval_seconds,
                set_health=lambda name, status: self._health.set(name, status),
            ),
            Part.ROUTING: lambda: self.routing,
            Part.OTLP: lambda: OtlpComponent(
                self.db, settings, self.taxonomy, self.wake_index.set, metrics=self.metrics
            ),
        }
        self.components: list[Component] = [build() for part, build in builders.items() if part in self.parts]
        self.workers: list[StageWorker] = []
        self.index_stage = IndexStage(
            self.recall,
            settings.embedding_batch_size,
            settings.embedding_batch_max_wait_ms / 1000,
            metrics=self.metrics,
        )
        self.server: grpc.Server | None = None
        self.port: int = 0
        self.console: ConsoleServer | None = None
        self._health = health.HealthServicer()
        self._stopping = threading.Event()
        self._executor: futures.ThreadPoolExecutor | None = None
        self.readiness = Readiness(
            [
                Check("the store", self.db.ping),
                Check("the embedding model", self.recall.embedder.load),
                Check(f"Milvus at {safe_url(settings.effective_milvus_uri)}", lambda: self.recall.index),
            ],
            on_ready=self._on_ready,
            stopping=self._stopping,
        )
        self._health_names: list[str] = []

    def _ingestion_service(self) -> GrpcService:
        ingestion = IngestionServicer(
            self.db, self.settings, self.taxonomy, self.committer, self.wake_index.set
        )
        return GrpcService(
            "feedbackloop.v1.IngestionService",
            INGESTION_SCOPES,
            lambda server: ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(ingestion, server),
        )

    # --- lifecycle ---

    def prepare_store(self) -> None:
        """Migrate (FEEDBACKLOOP_AUTO_MIGRATE) or refuse a schema that is not the code's."""
        url = safe_url(self.db.url)
        try:
            if self.settings.auto_migrate:
                self.db.upgrade()
            current, head = self.db.current_revision(), self.db.head_revision()
        except OperationalError as error:
            raise StartupError(f"cannot reach the database at {url}: {error.orig or error}") from error
        if current == head:
            return
        if current is None:
            raise StartupError(
                f"the database at {url} has no schema and FEEDBACKLOOP_AUTO_MIGRATE is off: "
                "run `feedbackloop db upgrade` first"
            )
        known = {script.revision for script in self.db.migration_scripts()}
        if current not in known:
            raise StartupError(
                f"the database schema is at revision {current}, newer than this code knows (it needs {head}): "
                "run the feedbackloop version that migrated it"
            )
        raise StartupError(
            f"the database schema is at revision {current}, the code needs {head}: run `feedbackloop db upgrade`"
        )

    def anonymous_principal(self) -> auth.Principal | None:
        if self.settings.binds_loopback and self.settings.allow_anonymous_loopback:
            return auth.Principal(self.settings.default_project, auth.ALL_SCOPES, key_id="anonymous")
        return None

    def start(self, *, wait_ready: bool = True) -> int:
        """Bind, start the hosted parts, and serve; health is NOT_SERVING until the readiness
        checks pass. Returns the port once they have (or at once with `wait_ready=False`)."""
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
        elif self._serves_authenticated_rpcs() and keys.active_key_count(self.db) == 0:
            raise StartupError(
                f"refusing to serve on {self.settings.host} without authentication: no API key exists. "
                "Create one with `feedbackloop keys create --project P --scope ingest` first."
            )
        scopes: dict[str, auth.Scope | None] = {}
        for component in self.components:
            scopes.update(component.required_scopes)
        resolver = CachedKeyResolver(lambda digest: keys.principal_for_hash(self.db, digest))
        self._executor = futures.ThreadPoolExecutor(
            max_workers=self.settings.server_workers, thread_name_prefix="rpc"
        )
        self.server = grpc.server(
            self._executor,
            interceptors=[
                *([MetricsInterceptor(self.metrics)] if self.metrics.enabled else []),
                TracingInterceptor(),
                AuthInterceptor(
                    resolver,
                    scopes,
                    anonymous,
                    lambda token: feedback_tokens.resolve(self.db, token, datetime.now(UTC), anonymous),
                ),
                ErrorMappingInterceptor(),
                DecodingInterceptor(),  # innermost: a refused message is traced and authenticated
            ],
            options=server_options(self.settings),
        )
        names: list[str] = [health.SERVICE_NAME]
        for component in self.components:
            component.register(self.server)
            names.extend(component.service_names)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.server)
        if Part.REFLECTION in self.parts:
            names.append(reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, self.server)
        self._health_names = ["", *names]
        for name in self._health_names:  # until the readiness checks pass
            self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = grpc_address(self.settings.host, self.settings.port)
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpcio raises where older versions returned 0
            self.port = 0
        if self.port == 0:
            raise StartupError(bind_failure(self.settings.host, self.settings.port))
        try:
            self.telemetry.start(self.settings.host)
        except MetricsBindError as error:
            self.server.stop(None)
            raise StartupError(str(error)) from error
        try:
            for component in self.components:
                component.start()
        except PolicyBootstrapError as error:
            raise StartupError(str(error)) from error
        self.server.start()
        self._start_console()
        self.statistics.start()
        if Part.PIPELINE in self.parts:
            self.start_pipeline()
        log.info(
            "feedbackloop %s role listening on %s:%d (%s); NOT_SERVING until ready",
            self.settings.role,
            self.settings.host,
            self.port,
            ", ".join(sorted(self.parts)),
        )
        self.readiness.start()
        if wait_ready:
            self.readiness.wait()
        return self.port

    def _start_console(self) -> None:
        """The web console beside the API, as a client of it on this process's own port."""
        if Part.CONSOLE not in self.parts or not self.settings.console_enabled:
            return
        config = ConsoleConfig(
            target=target_for(self.settings.host, self.port),
            loopback_only=self.settings.binds_loopback,
            secure_cookies=self.settings.console_secure_cookies,
            cors_origins=self.settings.console_cors_origin_list,
        )
        self.console = ConsoleServer(config, self.settings.host, self.settings.console_port)
        try:
            self.console.start()
        except ConsoleBindError as error:
            self.console = None
            assert self.server is not None
            self.server.stop(None)
            self.telemetry.stop()
            raise StartupError(f"{error}; or turn the console off with FEEDBACKLOOP_CONSOLE=off") from error

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the readiness checks pass (True), or `timeout` passes or the server stops."""
        return self.readiness.wait(timeout)

    def _serves_authenticated_rpcs(self) -> bool:
        return any(component.required_scopes for component in self.components)

    def _on_ready(self) -> None:
        # The model and the index are loaded now: exempt them from garbage collection before
        # reporting SERVING, so few requests' objects are frozen with them.
        if self._freeze_startup_heap:
            heap.freeze_startup_objects()
        for name in self._health_names:
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("feedbackloop %s role SERVING on %s:%d", self.settings.role, self.settings.host, self.port)

    def start_pipeline(self) -> None:
        """Start the stage workers: indexing, then routing. (The readiness checks load the model
        and open the index meanwhile, so the first events do not wait seconds for them.)"""
        poll = self.settings.pipeline_poll_seconds
        self.workers.append(
            StageWorker(
                self.queue,
                self.index_stage,
                poll_seconds=poll,
                wake=self.wake_index,
                on_advanced=self.wake_route.set,
                metrics=self.metrics,
            )
        )
        self.workers.append(
            StageWorker(
                self.queue,
                self.routing.route_stage,
                poll_seconds=poll,
                wake=self.wake_route,
                metrics=self.metrics,
            )
        )
        for worker in self.workers:
            worker.start()

    def stop(self, grace: float | None = None) -> bool:
        """Drain and close, within `grace` seconds (default FEEDBACKLOOP_SHUTDOWN_GRACE_SECONDS)
        plus CANCEL_MARGIN_SECONDS and CLOSE_MARGIN_SECONDS, whatever the calls and the pipeline
        are doing. False when something had not finished by then and was abandoned."""
        if self._stopping.is_set():
            return True
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        started = time.monotonic()
        cancel_deadline = started + grace + CANCEL_MARGIN_SECONDS
        self._stopping.set()
        self._health.enter_graceful_shutdown()
        for worker in self.workers:
            worker.request_stop()  # finish the batch in hand while the calls drain
        unfinished: list[str] = []
        if self.server is not None and not self.server.stop(grace).wait(_left(cancel_deadline)):
            unfinished.append("RPCs still running after cancellation")
        unfinished.extend(
            f"pipeline stage {worker.name} (mid-batch)"
            for worker in self.workers
            if not worker.join(_left(cancel_deadline))
        )
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        closed = _run_in_order(self._close_steps(), time.monotonic() + CLOSE_MARGIN_SECONDS)
        if closed is not None:
            unfinished.append(f"closing ({closed})")
        if unfinished:
            log.warning(
                "shutdown: stopped waiting after %.1f s for: %s",
                time.monotonic() - started,
                "; ".join(unfinished),
            )
        return not unfinished

    def _close_steps(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            *([("the console", self.console.stop)] if self.console is not None else []),
            ("the ingest writer", self.committer.stop),
            ("the statistics refresher", self.statistics.stop),
            *((f"component {type(c).__name__}", c.stop) for c in reversed(self.components)),
            ("the recall index", self.recall.close),
            ("the metrics endpoint", self.telemetry.stop),
            ("the store", self.db.dispose),
        ]

    def wait(self) -> None:
        if self.server is not None:
            self.server.wait_for_termination()


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The gRPC server's channel arguments."""
    max_bytes = settings.max_message_bytes
    options = [
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", max_bytes),
        # gRPC sets SO_REUSEPORT by default on Linux: a second server on the same port
        # would start and silently take part of the traffic.
        ("grpc.so_reuseport", 0),
    ]
    if settings.max_connection_age_seconds > 0:
        # A client keeps its connections for as long as they live: behind a headless Service
        # it would never see a new replica. Past this age (gRPC adds up to 10% jitter) the
        # server sends GOAWAY, and the client resolves the name again and reconnects.
        options += [
            ("grpc.max_connection_age_ms", round(settings.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", round(settings.max_connection_age_grace_seconds * 1000)),
        ]
    return options


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _run_in_order(steps: list[tuple[str, Callable[[], None]]], deadline: float) -> str | None:
    """Run `steps` one after another on a helper thread until `deadline`; the name of the step
    still running then (left to finish in the background), or None when all are done."""
    current: list[str] = []

    def run() -> None:
        for name, step in steps:
            current[:] = [name]
            try:
                step()
            except Exception:
                log.exception("shutdown: closing %s failed", name)
        current.clear()

    thread = threading.Thread(target=run, name="shutdown", daemon=True)
    thread.start()
    thread.join(_left(deadline))
    return current[0] if thread.is_alive() and current else None


def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then stop within FEEDBACKLOOP_SHUTDOWN_GRACE_SECONDS plus a few
    seconds (`App.stop`); a second signal exits at once."""
    app = App(settings, freeze_startup_heap=True)
    requested = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        if requested.is_set():
            log.warning("signal %d again: exiting now", signum)
            logging.shutdown()
            os._exit(128 + signum)
        log.info(
            "signal %d: shutting down (in-flight calls get %.1f s, FEEDBACKLOOP_SHUTDOWN_GRACE_SECONDS)",
            signum,
            settings.shutdown_grace_seconds,
        )
        requested.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    app.start(wait_ready=False)  # probes see NOT_SERVING while the model loads
    # The main thread waits here and stops the server itself, so `serve` returns only once the
    # shutdown is over (a timeout keeps the wait responsive to signals).
    while not requested.wait(1.0):
        pass
    clean = app.stop()
    if not clean:
        # Threads still stuck in a call would keep the interpreter from exiting (it joins the
        # RPC threads): exit without them.
        logging.shutdown()
        os._exit(1)
    _exit_after(EXIT_MARGIN_SECONDS)


def _exit_after(seconds: float) -> None:
    """Bound what happens after `serve` returns: interpreter exit joins non-daemon threads and
    runs exit handlers, any of which a stuck library thread could block."""

    def watchdog() -> None:
        time.sleep(seconds)
        log.warning("exit took longer than %.1f s after shutdown: exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=watchdog, name="exit-watchdog", daemon=True).start()
