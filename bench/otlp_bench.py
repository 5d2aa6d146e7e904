"""OTLP ingest benchmark: LLM spans accepted per second through TraceService/Export, in batches
of 512 from the real OpenTelemetry OTLP gRPC exporter, against the streamed feedback ingest rate
measured on the same server in the same run.

A real `feedbackloop serve` runs as a subprocess (embedded SQLite, pipeline off, as in
`ingestion_bench`). The spans are made by the OpenTelemetry SDK as an instrumented chat client
would (GenAI semantic conventions, JSON messages, conversations of 10 turns) and captured; then
`OTLPSpanExporter.export` sends them 512 at a time, as a BatchSpanProcessor does, one export
after another: first from one application, then from two at once (half the spans each, as two
replicas of an application would), which overlaps the exporters' encoding with the server's
work. The time covers the exporter's encoding, the RPC, per-span mapping and
validation, and the commit of each batch (interactions, span ids and session counters).

Target: at least the streamed feedback rate per event (`stream acked events/s`).

On a shared machine those rates move with the other load from run to run (the two are measured
a few seconds apart), so the server's own CPU time per span and per streamed event is printed
beside them, read from /proc for the server process: the figure that sharing disturbs least.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bench.ingestion_bench import _server, _stream
from bench.proc_cpu import server_cpu_seconds
from bench.serve_process import record_interaction
from feedbackloop.v1 import ingestion_pb2, ingestion_pb2_grpc

BATCH = 512
TURNS_PER_CONVERSATION = 10


def _spans(count: int) -> list[ReadableSpan]:
    captured = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-chat"}))
    provider.add_span_processor(SimpleSpanProcessor(captured))
    tracer = provider.get_tracer("bench-llm-client")
    for i in range(count):
        question = f"Question {i}: how much is the Pro plan for a team of {i % 50} people?"
        with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o")
            span.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            span.set_attribute("gen_ai.request.temperature", 0.2)
            span.set_attribute("gen_ai.conversation.id", f"conv-{i // TURNS_PER_CONVERSATION}")
            span.set_attribute(
                "gen_ai.input.messages",
                json.dumps(
                    [
                        {
                            "role": "system",
                            "parts": [{"type": "text", "content": "You are a support assistant."}],
                        },
                        {"role": "user", "parts": [{"type": "text", "content": question}]},
                    ]
                ),
            )
            span.set_attribute(
                "gen_ai.output.messages",
                json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [
                                {"type": "text", "content": f"The Pro plan costs ${10 + i % 7} a seat."}
                            ],
                            "finish_reason": "stop",
                        }
                    ]
                ),
            )
            span.set_attribute("gen_ai.usage.input_tokens", 40)
            span.set_attribute("gen_ai.usage.output_tokens", 12)
    provider.shutdown()
    return list(captured.get_finished_spans())


def _export(address: str, spans: list[ReadableSpan], exporters: int) -> float:
    """Spans/s with `exporters` applications exporting at once, each one batch after another."""
    batches = [spans[start : start + BATCH] for start in range(0, len(spans), BATCH)]
    clients = [
        OTLPSpanExporter(endpoint=f"http://{address}", insecure=True, timeout=60) for _ in range(exporters)
    ]
    failures: list[int] = []

    def send(client: OTLPSpanExporter, own: list[list[ReadableSpan]]) -> None:
        for batch in own:
            if client.export(batch) != SpanExportResult.SUCCESS:
                failures.append(len(batch))

    try:
        for client in clients:  # connect each one (these spans are replays below: nothing new)
            assert client.export(batches[0]) == SpanExportResult.SUCCESS
        threads = [
            threading.Thread(target=send, args=(client, batches[n::exporters]))
            for n, client in enumerate(clients)
        ]
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - t0
    finally:
        for client in clients:
            client.shutdown()
    if failures:
        raise RuntimeError(f"{len(failures)} OTLP exports failed")
    return sum(len(b) for b in batches[1:]) / elapsed


def _stored(address: str, conversations: int) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        last = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id=f"conv-{conversations - 1}"))
        return len(last.turns)


def run(quick: bool = False) -> dict[str, float]:
    span_count = BATCH * (4 if quick else 40)
    stream_events = 2_000 if quick else 20_000
    spans = _spans(span_count + BATCH)
    with tempfile.TemporaryDirectory(prefix="fl-otlp-bench-") as tmp, _server(Path(tmp)) as address:
        interaction_id = record_interaction(address, "$10.")
        half = len(spans) // 2 // BATCH * BATCH
        cpu, client = server_cpu_seconds(address), time.process_time()
        one = _export(address, spans[: half + BATCH], 1)
        cpu_one, client_one = server_cpu_seconds(address) - cpu, time.process_time() - client
        results = {
            "otlp_spans": float(len(spans) - BATCH),
            "otlp_spans_per_s": one,
            "otlp_2_exporters_spans_per_s": _export(address, spans[:BATCH] + spans[half + BATCH :], 2),
            # The one-exporter run: its batches plus the connecting export of each client.
            "otlp_server_cpu_us_per_span": cpu_one / (half + BATCH) * 1e6,
            "otlp_client_cpu_us_per_span": client_one / (half + BATCH) * 1e6,
        }
        cpu = server_cpu_seconds(address)
        results.update(_stream(address, interaction_id, stream_events))
        # The stream's warm-up and its events (the warm-up's 10 are a rounding error).
        results["stream_server_cpu_us_per_event"] = (server_cpu_seconds(address) - cpu) / stream_events * 1e6
        if _stored(address, (span_count + BATCH) // TURNS_PER_CONVERSATION) != TURNS_PER_CONVERSATION:
            raise RuntimeError("the exported spans were not all stored")
    results["otlp_vs_stream_ratio"] = results["otlp_spans_per_s"] / results["stream_events_per_s"]
    results["otlp_vs_stream_cpu_ratio"] = (
        results["stream_server_cpu_us_per_event"] / results["otlp_server_cpu_us_per_span"]
    )
    ok = "ok" if results["otlp_vs_stream_ratio"] >= 1.0 else "MISSED"
    print(f"otlp: {results['otlp_spans']:,.0f} LLM spans in batches of {BATCH} from OTLPSpanExporter")
    print(f"  OTLP spans accepted/s        {results['otlp_spans_per_s']:>10,.1f}")
    print(f"  ... two exporters at once    {results['otlp_2_exporters_spans_per_s']:>10,.1f}")
    print(f"  stream feedback events/s     {results['stream_events_per_s']:>10,.1f}")
    print(f"  OTLP / stream                {results['otlp_vs_stream_ratio']:>10,.2f}  target >= 1.00 {ok}")
    print(f"  server CPU per OTLP span     {results['otlp_server_cpu_us_per_span']:>10,.1f} us")
    print(f"  server CPU per stream event  {results['stream_server_cpu_us_per_event']:>10,.1f} us")
    print(
        f"  ... stream / OTLP            {results['otlp_vs_stream_cpu_ratio']:>10,.2f}  (events per server CPU second)"
    )
    print(
        f"  exporter CPU per OTLP span   {results['otlp_client_cpu_us_per_span']:>10,.1f} us  (encoding, this process)"
    )
    return results


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
