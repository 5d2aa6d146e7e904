"""Metrics out: what the loop sees, as OpenTelemetry metrics on Prometheus and OTLP.

`ServerMetrics` is what a server builds: the exporters (`export.py`), the instruments the
services record into (`instruments.py`), bounded label values (`labels.py`) and the gauges read
from the store (`store_gauges.py`). Every role builds one, so workers are scraped like the api.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from feedbackloop.config import Settings
from feedbackloop.metrics.export import MetricsBindError, MetricsExport
from feedbackloop.metrics.instruments import Metrics
from feedbackloop.metrics.labels import LabelFolder
from feedbackloop.metrics.store_gauges import StoreGauges
from feedbackloop.store.db import Database

__all__ = ["Metrics", "MetricsBindError", "ServerMetrics"]


@dataclass
class ServerMetrics:
    export: MetricsExport
    metrics: Metrics
    gauges: StoreGauges | None

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        *,
        categories_for: Callable[[str], frozenset[str]],
        prompts_for: Callable[[str], frozenset[str]],
    ) -> ServerMetrics:
        export = MetricsExport(settings.metrics_port)
        meter = export.meter()
        folder = LabelFolder(categories_for, prompts_for, settings.metrics_max_versions)
        metrics = Metrics(meter, folder, enabled=export.enabled, project_label=settings.metrics_project_label)
        gauges = (
            StoreGauges(
                db,
                meter,
                project_label=settings.metrics_project_label,
                refresh_seconds=settings.metrics_refresh_seconds,
            )
            if export.enabled
            else None
        )
        return cls(export, metrics, gauges)

    @property
    def port(self) -> int:
        """The bound /metrics port (0 when there is no endpoint)."""
        return self.export.port

    def start(self, host: str) -> int:
        return self.export.start(host)

    def stop(self) -> None:
        self.export.stop()


def disabled() -> Metrics:
    """Instruments that record nothing, for parts built without a server (tools, tests)."""
    from opentelemetry.metrics import NoOpMeterProvider

    meter = NoOpMeterProvider().get_meter("feedbackloop")
    return Metrics(
        meter,
        LabelFolder(lambda _: frozenset(), lambda _: frozenset(), 1),
        enabled=False,
        project_label=False,
    )
