"""The store-read gauges: read at most once per refresh interval, whatever the scrape rate."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import event

from feedbackloop.metrics.store_gauges import StoreGauges


def gauge_values(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    data = reader.get_metrics_data()
    out: dict[tuple[tuple[str, Any], ...], float] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        out[tuple(sorted(point.attributes.items()))] = point.value
    return out


def test_the_store_is_read_once_per_interval(db: Any) -> None:
    statements: list[str] = []
    event.listen(db.read_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    now = [100.0]
    reader = InMemoryMetricReader()
    StoreGauges(
        db,
        MeterProvider(metric_readers=[reader]).get_meter("t"),
        project_label=False,
        refresh_seconds=15.0,
        clock=lambda: now[0],
    )
    assert gauge_values(reader, "feedbackloop.pipeline.queue.depth") == {
        (("stage", "span_link"),): 0,
        (("stage", "index"),): 0,
        (("stage", "route"),): 0,
    }
    reads = len(statements)
    assert reads > 0
    for _ in range(5):  # scrapes within the interval: the same reading
        gauge_values(reader, "feedbackloop.pipeline.queue.depth")
    assert len(statements) == reads
    now[0] += 15.0
    gauge_values(reader, "feedbackloop.pipeline.queue.depth")
    assert len(statements) > reads
