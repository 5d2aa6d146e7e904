"""A Node.js application instrumented with the OpenTelemetry SDK (sdk-trace-node and the OTLP
gRPC exporter from npm) exports LLM spans, gives feedback by span id and reads the session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from feedbackloop.auth import Scope
from feedbackloop.store import keys

POLYGLOT = Path(__file__).resolve().parents[2] / "tests" / "polyglot"


def _node_modules() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm are not installed")
    if not (POLYGLOT / "node_modules" / "@opentelemetry" / "exporter-trace-otlp-grpc").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=POLYGLOT,
            check=True,
            timeout=300,
        )


def _run(address: str, conversation: str, key: str) -> dict[str, Any]:
    result = subprocess.run(
        ["node", str(POLYGLOT / "otlp_client.js"), address, conversation],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FEEDBACKLOOP_API_KEY": key},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_node_sdk_exports_spans_and_gives_feedback_by_span(make_server, store_url, db) -> None:  # type: ignore[no-untyped-def]
    _node_modules()
    key = keys.create_key(db, "acme", frozenset({Scope.INGEST, Scope.READ}))
    server = make_server(database_url=store_url, allow_anonymous_loopback=False)
    out = _run(server.address, "node-conv-1", key)
    first, second = out["spans"]
    assert out["feedback_created"] is True
    assert [(t["turn_index"], t["response"], t["model"]) for t in out["turns"]] == [
        (0, out["answers"][0], "gpt-4o"),
        (1, out["answers"][1], "claude-3-5-sonnet"),
    ]
    assert [(t["trace_id"], t["span_id"]) for t in out["turns"]] == [
        (first["trace_id"], first["span_id"]),
        (second["trace_id"], second["span_id"]),
    ]
    assert out["turns"][0]["feedback"] == []
    assert out["turns"][1]["feedback"] == [
        {
            "id": out["feedback_id"],
            "span_link": "SPAN_LINK_STATE_LINKED",
            "comment": "the team plan price is wrong",
        }
    ]
