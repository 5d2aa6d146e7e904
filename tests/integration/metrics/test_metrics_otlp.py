"""Metrics over OTLP: with an endpoint set, the server pushes its metrics to a real OTLP/gRPC
collector (an in-process MetricsService on loopback), and OTEL_SDK_DISABLED turns them off."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import pytest
from metrics_support import free_port
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc


class Collector(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.points: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        with self._lock:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        self.names.add(metric.name)
                        self.points.setdefault(metric.name, []).append(metric)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def test_metrics_are_pushed_over_otlp_when_an_endpoint_is_set(
    make_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "true")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
        monkeypatch.delenv("OTEL_METRICS_EXPORTER", raising=False)
        app_server = make_server()  # no metrics port: OTLP alone
        assert app_server.app.metrics.enabled and app_server.app.telemetry.port == 0
        stub = ingestion_pb2_grpc.IngestionServiceStub(app_server.channel)
        stub.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(session_id="s-otlp", turn_index=0, response="ok")
            )
        )
        deadline = time.monotonic() + 30
        while "rpc.server.call.duration" not in collector.names and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {"rpc.server.call.duration", "feedbackloop.pipeline.queue.depth"} <= collector.names
        (point, *_) = collector.points["rpc.server.call.duration"][-1].histogram.data_points
        attributes = {a.key: a.value.string_value for a in point.attributes}
        assert attributes["rpc.method"] == "RecordInteraction"
        assert attributes["rpc.response.status_code"] == "OK"
    finally:
        server.stop(None)


def test_otel_sdk_disabled_turns_metrics_off_endpoint_included(
    make_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    port = free_port()
    app_server = make_server(metrics_port=port)
    assert not app_server.app.metrics.enabled
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
