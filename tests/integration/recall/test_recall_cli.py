"""`feedbackloop recall ...` and `feedbackloop pipeline ...` against a real server over gRPC."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from feedbackloop.cli import main
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc, pipeline_pb2, pipeline_pb2_grpc


def test_reindex_search_top_issues_and_pipeline_commands(
    make_server: Callable[..., Any], embedder: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server = make_server(embedder=embedder, pipeline_enabled=True, pipeline_poll_seconds=0.05)
    ingest = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    pipeline = server.stub(pipeline_pb2_grpc.PipelineServiceStub)
    interaction_id = ingest.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(
                session_id="cli",
                input_messages=[common_pb2.ChatMessage(role="user", content="How much is the Pro plan?")],
            )
        )
    ).interaction_id
    feedback_id = ingest.SubmitFeedback(
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=common_pb2.Feedback(
                interaction_id=interaction_id, thumb=common_pb2.THUMB_DOWN, comment="The quoted price is old."
            )
        )
    ).feedback_id
    deadline = time.monotonic() + 60
    while pipeline.GetPipelineStatus(pipeline_pb2.GetPipelineStatusRequest()).pending_index and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    connect = ("--server", server.address)

    assert main(["pipeline", "status", *connect]) == 0
    assert "pending index: 0" in capsys.readouterr().out
    assert main(["recall", "search", "outdated pricing", "--top-k", "3", *connect]) == 0
    assert feedback_id in capsys.readouterr().out
    assert main(["recall", "reindex", "--quiet", *connect]) == 0
    assert "reindexed 1 feedback" in capsys.readouterr().out
    assert main(["recall", "top-issues", "--window", "1d", "--limit", "5", *connect]) == 0
    assert "1 complaints in the last 1d" in capsys.readouterr().out
    assert main(["pipeline", "dead-letters", *connect]) == 0
    assert "the dead letter is empty" in capsys.readouterr().out
    assert main(["pipeline", "retry", *connect]) == 0
    assert "re-queued 0 job(s)" in capsys.readouterr().out
    # A server error reaches the user as a message and a non-zero exit, not a traceback.
    assert main(["recall", "search", "   ", *connect]) == 1
    assert "INVALID_ARGUMENT: text: must not be empty" in capsys.readouterr().err
