"""Where metrics go: a Prometheus `/metrics` endpoint, OTLP, both or neither.

- FEEDBACKLOOP_METRICS_PORT (0: off) serves the Prometheus text format on that port, on the
  address the gRPC server binds (`opentelemetry-exporter-prometheus` over `prometheus_client`).
- OTLP follows the SDK's conventions: metrics are pushed over OTLP/gRPC when
  OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is set and
  OTEL_METRICS_EXPORTER (default `otlp`) names `otlp`; `OTEL_METRICS_EXPORTER=none` turns the
  push off. The exporter reads its own variables (OTEL_EXPORTER_OTLP_HEADERS,
  OTEL_METRIC_EXPORT_INTERVAL, ...).
- OTEL_SDK_DISABLED=true turns every metric off, the endpoint included: the SDK's meter
  provider records nothing then, and an endpoint serving nothing would only mislead.

Each server builds its own MeterProvider (and Prometheus registry) rather than the global one,
so several servers in one process (tests, benchmarks) keep their series apart. With neither
exporter the meter is the API's no-op one and recording costs nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from wsgiref.simple_server import WSGIServer

from opentelemetry.metrics import Meter, MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

log = logging.getLogger(__name__)

METER_NAME = "feedbackloop"


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def otlp_metrics_wanted() -> bool:
    if sdk_disabled():
        return False
    exporters = {e.strip().lower() for e in os.environ.get("OTEL_METRICS_EXPORTER", "otlp").split(",")}
    if "otlp" not in exporters:
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    )


class MetricsBindError(RuntimeError):
    """The metrics port cannot be bound; the message says which and why."""


class MetricsExport:
    """One server's meter provider and exporters; `start` binds the endpoint, `stop` closes it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._readers: list[MetricReader] = []
        self._registry = None
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        if port and sdk_disabled():
            log.warning(
                "metrics: OTEL_SDK_DISABLED=true turns metrics off; FEEDBACKLOOP_METRICS_PORT=%d is not served",
                port,
            )
        elif port:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=True)
            self._readers.append(PrometheusMetricReader(registry=self._registry))
        if otlp_metrics_wanted():
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            self._readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
            log.info("metrics: exporting over OTLP")
        self.provider: MeterProvider
        if self._readers:
            resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "feedbackloop")})
            self.provider = SdkMeterProvider(metric_readers=self._readers, resource=resource)
        else:
            self.provider = NoOpMeterProvider()

    @property
    def enabled(self) -> bool:
        return bool(self._readers)

    def meter(self) -> Meter:
        return self.provider.get_meter(METER_NAME)

    def start(self, host: str) -> int:
        """Serve /metrics on `host` and the configured port; the port, or 0 when off."""
        if self._registry is None:
            return 0
        from prometheus_client import start_http_server

        address = host.strip("[]")
        try:
            self._http, self._thread = start_http_server(self._port, addr=address, registry=self._registry)
        except OSError as error:
            raise MetricsBindError(
                f"cannot serve metrics on {host}:{self._port} (FEEDBACKLOOP_METRICS_PORT): {error.strerror or error}"
            ) from error
        self.port = int(self._http.server_port)
        log.info("metrics: Prometheus endpoint on http://%s:%d/metrics", host, self.port)
        return self.port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if isinstance(self.provider, SdkMeterProvider):
            # Flushes the OTLP reader's last export; bounded so a dead collector cannot hold us.
            self.provider.shutdown(timeout_millis=2_000)
