"""SearchSimilar's `mode` over gRPC: which field each query searches, and what the answer says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from test_recall_service import Client

from feedbackloop.v1 import common_pb2, ingestion_pb2, recall_pb2
from support import code_of


@pytest.fixture
def client(make_server: Callable[..., Any], embedder: Any) -> Client:
    server = make_server(
        embedder=embedder, pipeline_enabled=True, embedding_batch_max_wait_ms=20, pipeline_poll_seconds=0.05
    )
    return Client(server)


def _bare_thumb_down(client: Client, question: str) -> str:
    interaction_id = client.interaction(question)
    feedback = common_pb2.Feedback(interaction_id=interaction_id, thumb=common_pb2.THUMB_DOWN)
    return str(
        client.ingest.SubmitFeedback(ingestion_pb2.SubmitFeedbackRequest(feedback=feedback)).feedback_id
    )


def test_modes_choose_the_field(client: Client) -> None:
    rude = client.complain("The assistant was rude and condescending to me.")
    _bare_thumb_down(client, "How much does the Pro plan cost?")
    pricing = _bare_thumb_down(client, "what is the price of the pro plan per month")
    client.wait_indexed()
    search = client.recall.SearchSimilar

    by_text = search(recall_pb2.SearchSimilarRequest(text="a rude, condescending reply", top_k=1))
    assert by_text.mode == recall_pb2.SEARCH_MODE_FEEDBACK
    assert [h.feedback.id for h in by_text.hits] == [rude]

    # A bare thumbs-down has no words: by id it searches the question field.
    by_id = search(recall_pb2.SearchSimilarRequest(feedback_id=pricing, top_k=1))
    assert by_id.mode == recall_pb2.SEARCH_MODE_QUESTION
    assert by_id.query_text == "what is the price of the pro plan per month"
    assert by_id.hits[0].feedback.comment == "" and by_id.hits[0].feedback.id != pricing

    # Worded feedback by id uses its words.
    assert search(recall_pb2.SearchSimilarRequest(feedback_id=rude)).mode == recall_pb2.SEARCH_MODE_FEEDBACK

    both = search(recall_pb2.SearchSimilarRequest(text="pro plan price", mode=recall_pb2.SEARCH_MODE_BOTH))
    assert both.mode == recall_pb2.SEARCH_MODE_BOTH and len(both.hits) == 3
    for hit in both.hits:  # each field's cosine is reported beside the fused score
        assert 0 < hit.score < 1 and hit.question_score != 0
    assert max(both.hits, key=lambda h: h.question_score).feedback.comment == ""


def test_an_unknown_mode_is_refused(client: Client) -> None:
    request = recall_pb2.SearchSimilarRequest(text="anything")
    request.mode = 9  # type: ignore[assignment]  # a value a newer client might send
    code, message = code_of(lambda: client.recall.SearchSimilar(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "mode" in message and "unknown value 9" in message
