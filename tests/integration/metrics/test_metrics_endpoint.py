"""Metrics out: a real server's /metrics scraped over HTTP after real traffic.

Servers on loopback with the real model and Milvus Lite; the feedback goes through ingestion
and the real pipeline, and the assertions read the Prometheus text format the endpoint serves.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from metrics_support import Scrape, free_port, scrape
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from sqlalchemy import select

from feedbackloop.config import Settings
from feedbackloop.recall import milvus_timing
from feedbackloop.server import App, StartupError
from feedbackloop.store.models import PipelineJob
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc, recall_pb2, recall_pb2_grpc
from support import code_of

REPO = Path(__file__).resolve().parents[3]
FAST_PIPELINE = {"pipeline_enabled": True, "embedding_batch_max_wait_ms": 0, "pipeline_poll_seconds": 0.05}
RECEIVED = "feedbackloop_feedback_received_total"
NEGATIVE = "feedbackloop_feedback_negative_total"
RPC_COUNT = "rpc_server_call_duration_seconds_count"


def wait_for(condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


def record(channel: grpc.Channel, session: str, prompt: str, version: str, model: str) -> str:
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
    return str(
        stub.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(
                    session_id=session,
                    turn_index=0,
                    response="Our plan costs $10.",
                    prompt=common_pb2.PromptRef(name=prompt, version=version),
                    model=common_pb2.ModelRef(name="m", version=model),
                )
            )
        ).interaction_id
    )


def submit(channel: grpc.Channel, feedback: common_pb2.Feedback) -> str:
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
    return str(stub.SubmitFeedback(ingestion_pb2.SubmitFeedbackRequest(feedback=feedback)).feedback_id)


def all_done(app: App) -> bool:
    with app.db.read() as session:
        statuses = set(session.scalars(select(PipelineJob.stage + ":" + PipelineJob.status)))
    return statuses == {"route:done"}


def test_feedback_pipeline_routing_and_rpc_series_after_real_traffic(
    make_server: Callable[..., Any], store_url: str, embedder: Any
) -> None:
    port = free_port()
    server = make_server(
        embedder=embedder,
        database_url=store_url,
        policies_dir=REPO / "policies",
        metrics_port=port,
        metrics_refresh_seconds=0,
        metrics_max_versions=2,
        **FAST_PIPELINE,
    )
    channel = server.channel
    known = record(channel, "s-known", "support-answer", "3", "model-a")
    unknown_prompt = record(channel, "s-unknown", "someone-elses-prompt", "9", "model-b")
    third_model = record(channel, "s-third", "support-answer", "3", "model-c")  # past metrics_max_versions
    down = common_pb2.THUMB_DOWN
    for _ in range(5):  # enough similar complaints for outdated-info-guideline to propose a patch
        submit(
            channel,
            common_pb2.Feedback(
                interaction_id=known, thumb=down, comment="that price is old", categories=["outdated_info"]
            ),
        )
    submit(channel, common_pb2.Feedback(interaction_id=known, thumb=common_pb2.THUMB_UP))
    submit(channel, common_pb2.Feedback(interaction_id=unknown_prompt, thumb=down))
    submit(
        channel, common_pb2.Feedback(interaction_id=unknown_prompt, categories=["unsafe"])
    )  # always reviewed
    submit(
        channel,
        common_pb2.Feedback(
            interaction_id=third_model, implicit_signal=common_pb2.IMPLICIT_SIGNAL_REGENERATE
        ),
    )
    submit(channel, common_pb2.Feedback(session_id="s-known", rating=5))  # session-level: no prompt
    code, _ = code_of(lambda: submit(channel, common_pb2.Feedback(interaction_id=known, rating=9)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    wait_for(lambda: all_done(server.app))

    m = wait_for(lambda: (s := scrape(port)).value(RECEIVED) == 10 and s)
    known_labels = {"source": "end_user", "prompt_name": "support-answer", "prompt_version": "3"}
    assert m.value(RECEIVED, model_version="model-a", **known_labels) == 6
    assert m.value(NEGATIVE, model_version="model-a", **known_labels) == 5  # the share: 5 of 6
    # Outside the applied Prompts, and past the first two model versions: folded into `other`.
    assert m.value(RECEIVED, prompt_name="other", prompt_version="other", model_version="model-b") == 2
    assert m.value(RECEIVED, prompt_name="support-answer", model_version="other") == 1
    assert m.value(RECEIVED, prompt_name="none", prompt_version="none", model_version="none") == 1
    assert m.label_values(RECEIVED, "model_version") == {"model-a", "model-b", "other", "none"}
    assert m.value("feedbackloop_feedback_signals_total", signal="thumbs_down") == 6
    assert m.value("feedbackloop_feedback_signals_total", signal="regenerate") == 1
    assert m.value("feedbackloop_feedback_categories_total", category="outdated_info") == 5
    assert m.value(NEGATIVE) == 8  # 6 thumbs down, a regenerate, a category

    # gRPC: by service, method and status code, the refused call included.
    ingestion = {"rpc_service": "feedbackloop.v1.IngestionService"}
    assert m.value(RPC_COUNT, rpc_method="SubmitFeedback", rpc_response_status_code="OK", **ingestion) == 10
    assert m.value(RPC_COUNT, rpc_method="SubmitFeedback", rpc_response_status_code="INVALID_ARGUMENT") == 1
    assert m.value(RPC_COUNT, rpc_method="RecordInteraction", rpc_response_status_code="OK") == 3
    assert m.label_values(RPC_COUNT, "rpc_method") == {
        "SubmitFeedback",
        "RecordInteraction",
    }  # no health checks

    # The pipeline: every job done in both stages, the batches embedded and upserted.
    assert m.value("feedbackloop_pipeline_jobs_total", stage="index", outcome="done") == 10
    assert m.value("feedbackloop_pipeline_jobs_total", stage="route", outcome="done") == 10
    assert m.value("feedbackloop_pipeline_jobs_total", outcome="retried") == 0
    assert m.value("feedbackloop_embedding_batch_size_sum") == 10
    assert m.value("feedbackloop_embedding_duration_seconds_count") >= 1
    assert m.value("feedbackloop_milvus_duration_seconds_count", operation="upsert") >= 1
    assert m.label_values("feedbackloop_milvus_duration_seconds_count", "operation") <= set(
        milvus_timing.OPERATIONS
    )
    assert m.value("feedbackloop_pipeline_queue_depth", stage="index") == 0
    assert m.value("feedbackloop_pipeline_queue_depth", stage="route") == 0
    assert m.value("feedbackloop_pipeline_dead_letters") == 0

    # Routing: the first policy decided on each of the 10, a match stopped the ones after it.
    decisions = "feedbackloop_routing_decisions_total"
    assert m.value(decisions, policy="unsafe-to-safety-review", outcome="condition_false") == 9
    assert m.value(decisions, policy="unsafe-to-safety-review", outcome="matched") == 1
    assert m.value(decisions, policy="outdated-info-guideline", outcome="matched") == 1
    assert m.value(decisions, policy="outdated-info-guideline", outcome="aggregate_below_threshold") == 4
    sampled = m.value(decisions, policy="thumbs-down-comment-review", outcome="matched")  # sample: 0.25
    assert sampled + m.value(decisions, policy="thumbs-down-comment-review", outcome="sampled_out") == 4
    actions = "feedbackloop_routing_actions_total"
    assert m.value(actions, kind="prompt_patch", status="created") == 1
    assert m.value(actions, kind="human_review", status="created") == sampled + 1
    assert m.value("feedbackloop_review_queue_depth", queue="quality-review") == sampled
    assert m.value("feedbackloop_review_queue_depth", queue="safety-review") == 1
    assert m.value("feedbackloop_review_overdue") == 0
    assert m.value("feedbackloop_prompt_patches", status="proposed") == 1
    assert m.value("feedbackloop_prompt_patches", status="applied") == 0
    assert m.label_values("feedbackloop_prompt_patches", "status") == {
        "proposed",
        "applied",
        "rejected",
        "rolled_back",
    }
    # Tenancy: no project label unless asked for.
    assert not any("project" in s.labels for s in m.samples)

    # A search times its Milvus call; an OTLP span that is not an LLM call is counted as dropped.
    searches = m.value("feedbackloop_milvus_duration_seconds_count", operation="search")
    recall_pb2_grpc.RecallServiceStub(channel).SearchSimilar(
        recall_pb2.SearchSimilarRequest(text="old price")
    )
    trace_service_pb2_grpc.TraceServiceStub(channel).Export(
        trace_service_pb2.ExportTraceServiceRequest(
            resource_spans=[
                trace_pb2.ResourceSpans(
                    scope_spans=[
                        trace_pb2.ScopeSpans(
                            spans=[
                                trace_pb2.Span(
                                    trace_id=bytes(range(1, 17)),
                                    span_id=bytes(range(1, 9)),
                                    name="GET /",
                                    start_time_unix_nano=time.time_ns(),
                                )
                            ]
                        )
                    ]
                )
            ]
        )
    )
    m = wait_for(
        lambda: (
            (s := scrape(port)).value("feedbackloop_milvus_duration_seconds_count", operation="search")
            == searches + 1
            and s
        )
    )
    assert m.value("feedbackloop_milvus_duration_seconds_sum", operation="search") > 0
    assert m.value("feedbackloop_otlp_spans_dropped_total", reason="not_llm") == 1
    # The README's table of series (which the chart's dashboard reads) is what the server serves.
    documented = set(
        re.findall(r"^\| `((?:feedbackloop|rpc)_[a-z_]+)`", (REPO / "README.md").read_text(), re.M)
    )
    documented |= set(
        re.findall(r"^\| `[a-z_]+`, `((?:feedbackloop|rpc)_[a-z_]+)`", (REPO / "README.md").read_text(), re.M)
    )
    served = {re.sub(r"_(bucket|count|sum)$", "", s.name) for s in m.samples}
    assert len(documented) == 19 and documented <= served, documented - served


def test_the_project_is_a_label_when_enabled(
    make_server: Callable[..., Any], store_url: str, embedder: Any
) -> None:
    port = free_port()
    server = make_server(
        embedder=embedder,
        database_url=store_url,
        metrics_port=port,
        metrics_project_label=True,
        metrics_refresh_seconds=0,
        **FAST_PIPELINE,
    )
    interaction = record(server.channel, "s-p", "support-answer", "1", "model-a")
    submit(server.channel, common_pb2.Feedback(interaction_id=interaction, thumb=common_pb2.THUMB_DOWN))
    wait_for(lambda: all_done(server.app))
    m = wait_for(lambda: (s := scrape(port)).value(RECEIVED) == 1 and s)
    assert m.value(RECEIVED, project="default") == 1
    assert m.value("feedbackloop_pipeline_jobs_total", project="default") == 0  # job counts stay store-wide
    assert m.value("feedbackloop_routing_decisions_total") == m.value(
        "feedbackloop_routing_decisions_total", project="default"
    )
    # No policy set here: no Prompt is applied, so the prompt name is folded even so.
    assert m.value(RECEIVED, project="default", prompt_name="other") == 1


def test_api_and_worker_each_serve_their_metrics(
    make_server: Callable[..., Any], store_url: str, embedder: Any
) -> None:
    api_port, worker_port = free_port(), free_port()
    api = make_server(
        embedder=embedder,
        database_url=store_url,
        role="api",
        metrics_port=api_port,
        metrics_refresh_seconds=0,
        **FAST_PIPELINE,
    )
    interaction = record(api.channel, "s-w", "support-answer", "1", "model-a")
    for _ in range(3):
        submit(api.channel, common_pb2.Feedback(interaction_id=interaction, comment="wrong"))
    before = scrape(api_port)
    # Nothing moves the jobs yet: the queue shows them, with the oldest one's age.
    assert before.value("feedbackloop_pipeline_queue_depth", stage="index") == 3
    assert before.value("feedbackloop_pipeline_queue_oldest_age_seconds", stage="index") > 0
    assert before.value(RECEIVED) == 0

    worker = make_server(
        embedder=embedder,
        database_url=store_url,
        role="worker",
        metrics_port=worker_port,
        metrics_refresh_seconds=0,
        **FAST_PIPELINE,
    )
    wait_for(lambda: all_done(api.app))
    w = wait_for(lambda: (s := scrape(worker_port)).value(RECEIVED) == 3 and s)
    assert w.value("feedbackloop_pipeline_jobs_total", stage="index", outcome="done") == 3
    assert w.value("feedbackloop_embedding_batch_size_count") >= 1
    assert w.value(RPC_COUNT) == 0  # it serves health checks only, which are not measured
    after = scrape(api_port)
    assert after.value("feedbackloop_pipeline_queue_depth", stage="index") == 0
    assert after.value(RPC_COUNT, rpc_method="SubmitFeedback") == 3
    assert after.value(RECEIVED) == 0  # counted once, where the pipeline took it in
    assert worker.app.telemetry.port == worker_port


def test_a_metrics_port_in_use_is_refused_at_start(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        app = App(
            Settings(
                host="127.0.0.1",
                port=0,
                data_dir=tmp_path,
                policies_dir=None,
                pipeline_enabled=False,
                metrics_port=port,
            )
        )
        with pytest.raises(
            StartupError, match=rf"cannot serve metrics on 127.0.0.1:{port} \(FEEDBACKLOOP_METRICS_PORT\)"
        ):
            app.start()


def test_without_a_metrics_port_or_otlp_endpoint_nothing_is_recorded(
    make_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    server = make_server()
    assert not server.app.metrics.enabled
    assert server.app.telemetry.port == 0
    assert server.app.telemetry.gauges is None


def test_scrape_text_parses_as_prometheus() -> None:
    text = '# TYPE x_total counter\nx_total{a="1"} 2.0\nx_total{a="2"} 3.0\n'
    assert Scrape(text).value("x_total") == 5
    assert Scrape(text).value("x_total", a="2") == 3
