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


def test_search_mode_option_picks_the_field_and_prints_the_field_scores(
    make_server: Callable[..., Any], embedder: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_recall_service import Client

    from feedbackloop.v1 import recall_pb2

    server = make_server(embedder=embedder, pipeline_enabled=True, pipeline_poll_seconds=0.05)
    client = Client(server)
    rude = client.complain("The assistant was rude and condescending to me.")
    interaction_id = client.interaction("what is the price of the pro plan per month")
    bare = client.ingest.SubmitFeedback(  # no words: only its question says what it is about
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=common_pb2.Feedback(interaction_id=interaction_id, thumb=common_pb2.THUMB_DOWN)
        )
    ).feedback_id
    client.wait_indexed()
    connect = ("--server", server.address)

    def search(*args: str) -> list[str]:
        assert main(["recall", "search", *args, *connect]) == 0
        return capsys.readouterr().out.splitlines()

    lines = search("a rude, condescending reply", "--top-k", "1")
    assert lines[0] == "mode: feedback" and rude in lines[1]
    lines = search("pro plan price", "--mode", "question", "--top-k", "1")
    assert lines[0] == "mode: question" and bare in lines[1]
    assert "(asked) what is the price of the pro plan per month" in lines[1]
    # By id, a wordless feedback is searched on its question unless the user asks otherwise.
    assert search(bare, "--feedback-id")[0] == "mode: question"
    assert search(bare, "--feedback-id", "--mode", "feedback")[0] == "mode: feedback"

    lines = search("pro plan price", "--mode", "both")
    expected = client.recall.SearchSimilar(
        recall_pb2.SearchSimilarRequest(text="pro plan price", mode=recall_pb2.SEARCH_MODE_BOTH)
    )
    assert lines[0] == "mode: both" and len(lines) == 1 + len(expected.hits) == 3
    for line, hit in zip(lines[1:], expected.hits, strict=True):
        assert line.startswith(
            f"{hit.score:.3f}  feedback {hit.feedback_score:.3f}  question {hit.question_score:.3f}  "
            f"{hit.feedback.id}"
        )

    with pytest.raises(SystemExit) as exit_info:  # argparse refuses a mode it does not know
        main(["recall", "search", "x", "--mode", "hybrid", *connect])
    assert exit_info.value.code == 2
    assert "invalid choice: 'hybrid'" in capsys.readouterr().err
