"""RoutingComponent: the routing, prompt, dataset and review services plus the route stage.

The server (feedbackloop.server.App) builds one with the recall-backed similarity hook, hosts its
services and scopes like any other component, and runs `component.route_stage` in the pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from feedbackloop import auth
from feedbackloop.config import Settings
from feedbackloop.errors import Aborted
from feedbackloop.ingestion.taxonomy import Taxonomy
from feedbackloop.metrics.instruments import Metrics
from feedbackloop.policy import validate_dir
from feedbackloop.routing import dataset_service, prompt_service, review_service
from feedbackloop.routing import servicer as routing_servicer
from feedbackloop.routing.revisions import KIND_BOOTSTRAP, LivePolicies
from feedbackloop.routing.router import Router
from feedbackloop.routing.similarity import Embed, SimilarFeedback
from feedbackloop.routing.sink_common import PageLimits
from feedbackloop.routing.stage import RouteStage
from feedbackloop.store.db import Database
from feedbackloop.v1 import (
    datasets_pb2,
    datasets_pb2_grpc,
    prompts_pb2,
    prompts_pb2_grpc,
    reviews_pb2,
    reviews_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)

log = logging.getLogger(__name__)


class PolicyBootstrapError(RuntimeError):
    """The configured policies directory is invalid; the message lists every error."""


@dataclass
class RoutingComponent:
    db: Database
    settings: Settings
    taxonomy: Taxonomy
    similar: SimilarFeedback | None = None
    embed: Embed | None = None
    on_committed: Callable[[], None] | None = None
    metrics: Metrics | None = None  # decisions and actions of the route stage
    service_names: tuple[str, ...] = (
        routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name,
        prompts_pb2.DESCRIPTOR.services_by_name["PromptService"].full_name,
        datasets_pb2.DESCRIPTOR.services_by_name["DatasetService"].full_name,
        reviews_pb2.DESCRIPTOR.services_by_name["ReviewService"].full_name,
    )
    required_scopes: dict[str, auth.Scope] = field(
        default_factory=lambda: {
            **routing_servicer.REQUIRED_SCOPES,
            **prompt_service.REQUIRED_SCOPES,
            **dataset_service.REQUIRED_SCOPES,
            **review_service.REQUIRED_SCOPES,
        }
    )

    def __post_init__(self) -> None:
        self.live = LivePolicies(self.db, self.taxonomy)
        self.taxonomy.follow(self.live.refresh)
        self.router = Router(self.db, self.live, self.similar, self.embed)
        self.route_stage = RouteStage(self.router, metrics=self.metrics)
        pages = PageLimits.from_settings(self.settings)
        self.routing_servicer = routing_servicer.RoutingServicer(self.router, pages)
        self.prompt_servicer = prompt_service.PromptServicer(self.db, pages)
        self.dataset_servicer = dataset_service.DatasetServicer(self.db, pages)
        self.review_servicer = review_service.ReviewServicer(
            self.db, self.settings, self.taxonomy, self.on_committed
        )

    def register(self, server: grpc.Server) -> None:
        routing_pb2_grpc.add_RoutingServiceServicer_to_server(self.routing_servicer, server)
        prompts_pb2_grpc.add_PromptServiceServicer_to_server(self.prompt_servicer, server)
        datasets_pb2_grpc.add_DatasetServiceServicer_to_server(self.dataset_servicer, server)
        reviews_pb2_grpc.add_ReviewServiceServicer_to_server(self.review_servicer, server)

    def start(self) -> None:
        self.bootstrap()
        for project in self.live.projects_with_revisions():
            self.live.refresh(project)  # installs each project's taxonomy

    def bootstrap(self) -> int:
        """Apply settings.policies_dir as revision 1 of the default project when none is live."""
        project = self.settings.default_project
        directory = self.settings.policies_dir
        if directory is None or not directory.exists() or self.live.refresh(project) is not None:
            return 0
        policy_set, errors = validate_dir(directory)
        if policy_set is None:
            raise PolicyBootstrapError(
                f"the policies in {directory} are invalid:\n" + "\n".join(str(e) for e in errors)
            )
        try:
            info, _ = self.live.apply(
                project,
                policy_set,
                expected_revision=0,
                applied_by="server",
                kind=KIND_BOOTSTRAP,
                message=f"bootstrap from {directory}",
            )
        except Aborted:
            return 0  # another process bootstrapped first
        log.info("applied %s as policy revision %d of project %s", directory, info.revision, project)
        return info.revision

    def known_prompts(self, project_id: str) -> frozenset[str]:
        """The project's applied Prompt resources (the prompt names metrics keep as labels)."""
        live = self.live.get(project_id)
        return frozenset(live.policy_set.prompts) if live is not None else frozenset()

    def stop(self) -> None:
        pass
