"""Server roles: which parts of feedbackloop each `serve --role` hosts, in this one table.

- `all`: every gRPC service and the pipeline in one process (the embedded deployment, the
  chart's `standalone` mode).
- `api`: every gRPC service, no pipeline; scaled with the request load.
- `worker`: the pipeline stages (embed and index, then route), claiming jobs from the shared
  queue; it serves `grpc.health.v1.Health` alone, for its probes.

Every role also serves its metrics (`metrics/`, on FEEDBACKLOOP_METRICS_PORT and over OTLP
when configured), as it serves health: they are not a part a role may leave out.

Every role waits for the same things before it reports SERVING (`readiness.py`): the store
answers, the embedding model is loaded (the api role embeds too: text searches, inline
evaluations) and Milvus is reachable.
"""

from __future__ import annotations

import enum
from typing import Literal

Role = Literal["all", "api", "worker"]


class Part(enum.StrEnum):
    INGESTION = "ingestion"  # IngestionService
    IDENTITY = "identity"  # IdentityService (who the calling key is)
    RECALL = "recall"  # RecallService
    PIPELINE_STATUS = "pipeline-status"  # PipelineService and the index drift check beside it
    ROUTING = "routing"  # RoutingService, PromptService, DatasetService, ReviewService; policy bootstrap
    OTLP = "otlp"  # OpenTelemetry TraceService/Export (spans in), and the span link sweep
    REFLECTION = "reflection"  # server reflection over the services hosted
    PIPELINE = "pipeline"  # the index and route stage workers
    CONSOLE = "console"  # the web console, a client of the services above (FEEDBACKLOOP_CONSOLE)


ROLES: dict[Role, frozenset[Part]] = {
    "all": frozenset(Part),
    "api": frozenset(Part) - {Part.PIPELINE},
    "worker": frozenset({Part.PIPELINE}),
}


class RoleError(ValueError):
    """Settings that leave a role nothing to run."""


def parts_for(role: Role, *, pipeline_enabled: bool = True) -> frozenset[Part]:
    """What a process of `role` hosts; FEEDBACKLOOP_PIPELINE_ENABLED=false takes the pipeline out."""
    parts = ROLES[role]
    if pipeline_enabled:
        return parts
    rest = parts - {Part.PIPELINE}
    if not rest:
        raise RoleError(
            f"the {role} role runs only the pipeline, which FEEDBACKLOOP_PIPELINE_ENABLED=false turns off"
        )
    return rest
