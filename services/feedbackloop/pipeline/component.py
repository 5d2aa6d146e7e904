"""The PipelineService and the index drift check, hosted together: the service reports what
the check counts (`recall/drift.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2

from feedbackloop import auth
from feedbackloop.pipeline.jobs import JobQueue
from feedbackloop.pipeline.servicer import REQUIRED_SCOPES, PipelineServicer
from feedbackloop.recall.drift import INDEX_HEALTH_SERVICE, IndexDriftMonitor
from feedbackloop.recall.service import Recall
from feedbackloop.store.db import Database
from feedbackloop.v1 import pipeline_pb2_grpc

HealthSetter = Callable[[str, "health_pb2.HealthCheckResponse.ServingStatus.ValueType"], None]


@dataclass
class PipelineComponent:
    queue: JobQueue
    db: Database
    recall: Recall
    index_check_interval_seconds: float
    # Called with (service name, status); the server passes its health servicer's `set`.
    set_health: HealthSetter | None = None
    monitor: IndexDriftMonitor = field(init=False)

    def __post_init__(self) -> None:
        self.monitor = IndexDriftMonitor(
            self.db, self.recall, self.index_check_interval_seconds, on_health=self._index_health
        )

    @property
    def service_names(self) -> tuple[str, ...]:
        return ("feedbackloop.v1.PipelineService",)

    @property
    def required_scopes(self) -> dict[str, auth.Scope]:
        return REQUIRED_SCOPES

    def register(self, server: grpc.Server) -> None:
        servicer = PipelineServicer(self.queue, index_status=self.monitor.status)
        pipeline_pb2_grpc.add_PipelineServiceServicer_to_server(servicer, server)

    def start(self) -> None:
        self.monitor.start()

    def stop(self) -> None:
        self.monitor.stop()

    def _index_health(self, in_step: bool) -> None:
        if self.set_health is not None:
            serving = (
                health_pb2.HealthCheckResponse.SERVING
                if in_step
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            self.set_health(INDEX_HEALTH_SERVICE, serving)
