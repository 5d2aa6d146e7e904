"""The instruments the server records into, and what each event adds to them.

Feedback is counted once, as the pipeline's index stage takes it in (after the batch is
indexed): every source (SubmitFeedback, streams, OTLP evaluation events, review resolutions)
passes there, the stored row and its interaction are already loaded, and ingestion pays
nothing. `feedbackloop_feedback_negative_total` counts the complaints among
`feedbackloop_feedback_received_total` with the same labels, so the negative share is their
ratio in PromQL (`sum(rate(..._negative_total[1h])) / sum(rate(..._received_total[1h]))`).

Every method is a no-op when metrics are off, before any label is computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.metrics import Meter

from feedbackloop.metrics.labels import NONE, LabelFolder
from feedbackloop.signals import is_negative, signals_of
from feedbackloop.store.models import Feedback

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
# Job outcomes of one processed batch.
DONE, RETRIED, DEAD_LETTERED = "done", "retried", "dead_lettered"


class Metrics:
    def __init__(self, meter: Meter, folder: LabelFolder, *, enabled: bool, project_label: bool) -> None:
        self.enabled = enabled
        self._folder = folder
        self._project_label = project_label
        counter, histogram = meter.create_counter, meter.create_histogram
        self._rpc_duration = histogram(
            "rpc.server.call.duration",
            unit="s",
            description="Duration of gRPC calls served, by service, method and status code.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._received = counter(
            "feedbackloop.feedback.received",
            unit="{feedback}",
            description="Feedback taken into the loop, by source, prompt name and version, and model version.",
        )
        self._negative = counter(
            "feedbackloop.feedback.negative",
            unit="{feedback}",
            description="Complaints among feedback received (same labels): the negative share is negative / received.",
        )
        self._signals = counter(
            "feedbackloop.feedback.signals",
            unit="{signal}",
            description="Signals carried by feedback received (a feedback may carry several), by signal.",
        )
        self._categories = counter(
            "feedbackloop.feedback.categories",
            unit="{category}",
            description="Categories picked on feedback received; outside the applied FeedbackSchema: other.",
        )
        self._jobs = counter(
            "feedbackloop.pipeline.jobs",
            unit="{job}",
            description="Pipeline jobs processed, by stage and outcome (done, retried, dead_lettered).",
        )
        self._batch_duration = histogram(
            "feedbackloop.pipeline.batch.duration",
            unit="s",
            description="Time a stage took to process one claimed batch.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._embed_size = histogram(
            "feedbackloop.embedding.batch.size",
            unit="{feedback}",
            description="Feedback embedded per model call in the index stage.",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS,
        )
        self._embed_duration = histogram(
            "feedbackloop.embedding.duration",
            unit="s",
            description="Duration of one embedding model call in the index stage.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._milvus_duration = histogram(
            "feedbackloop.milvus.duration",
            unit="s",
            description="Duration of Milvus operations, by operation.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._otlp_dropped = counter(
            "feedbackloop.otlp.spans.dropped",
            unit="{span}",
            description="OTLP spans not stored, by reason: not_llm (not an LLM call), refused (invalid).",
        )
        self._decisions = counter(
            "feedbackloop.routing.decisions",
            unit="{decision}",
            description="Routing decisions, by policy and outcome (matched, not_matched, ...).",
        )
        self._actions = counter(
            "feedbackloop.routing.actions",
            unit="{action}",
            description="Actions run by matched policies, by kind and status (created, existing, skipped, failed).",
        )

    # --- gRPC ---

    def rpc(self, service: str, method: str, code: str, seconds: float) -> None:
        if self.enabled:
            self._rpc_duration.record(
                seconds,
                {
                    "rpc.system": "grpc",
                    "rpc.service": service,
                    "rpc.method": method,
                    "rpc.response.status_code": code,
                },
            )

    # --- feedback ---

    def feedback_received(self, rows: Iterable[Feedback]) -> None:
        """Count stored feedback rows (with their interaction and categories loaded)."""
        if not self.enabled:
            return
        fold = self._folder
        for fb in rows:
            project = fb.project_id
            it = fb.interaction
            prompt = fold.prompt(project, it.prompt_name) if it is not None else NONE
            labels = self._with_project(
                project,
                {
                    "source": fold.source(fb.source),
                    "prompt_name": prompt,
                    "prompt_version": fold.prompt_version(project, prompt, it.prompt_version)
                    if it is not None
                    else NONE,
                    "model_version": fold.model_version(project, it.model_version or it.model_name)
                    if it is not None
                    else NONE,
                },
            )
            self._received.add(1, labels)
            if is_negative(fb):
                self._negative.add(1, labels)
            for signal in signals_of(fb):
                self._signals.add(1, {**labels, "signal": fold.signal(signal)})
            for category in fb.category_names:
                self._categories.add(1, {**labels, "category": fold.category(project, category)})

    # --- pipeline ---

    def batch(self, stage: str, seconds: float, outcomes: dict[str, int]) -> None:
        if not self.enabled:
            return
        self._batch_duration.record(seconds, {"stage": stage})
        for outcome, count in outcomes.items():
            if count:
                self._jobs.add(count, {"stage": stage, "outcome": outcome})

    def embedded(self, batch_size: int, seconds: float) -> None:
        if self.enabled:
            self._embed_size.record(batch_size)
            self._embed_duration.record(seconds)

    def milvus(self, operation: str, seconds: float) -> None:
        if self.enabled:
            self._milvus_duration.record(seconds, {"operation": operation})

    # --- OTLP ---

    def otlp_dropped(self, project_id: str, reason: str, count: int) -> None:
        if self.enabled and count:
            self._otlp_dropped.add(count, self._with_project(project_id, {"reason": reason}))

    # --- routing ---

    def routed(self, project_id: str, decisions: Sequence[tuple[Any, Sequence[dict[str, Any]]]]) -> None:
        """One routed feedback's decisions (Decision, action results), as the router returns them."""
        if not self.enabled:
            return
        for decision, results in decisions:
            self._decisions.add(
                1,
                self._with_project(
                    project_id, {"policy": decision.policy, "outcome": decision.outcome.value}
                ),
            )
            for res in results:
                self._actions.add(
                    1,
                    self._with_project(project_id, {"kind": str(res["type"]), "status": str(res["status"])}),
                )

    def _with_project(self, project_id: str, labels: dict[str, str]) -> dict[str, str]:
        if self._project_label:
            labels["project"] = project_id
        return labels
