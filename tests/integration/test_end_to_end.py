"""The whole loop as `make run` starts it: the example policies applied at start, the pipeline's
own worker threads embedding into Milvus Lite and routing, and only IngestionService calls
from the client. What comes out must be exactly what the policies say, and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from feedbackloop.v1 import (
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    pipeline_pb2,
    pipeline_pb2_grpc,
    prompts_pb2,
    prompts_pb2_grpc,
    reviews_pb2,
    reviews_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)

REPO = Path(__file__).resolve().parents[2]
OUTDATED = [
    "The price you gave for the Pro plan is outdated.",
    "The Pro plan price you quoted is outdated.",
    "Outdated price for the Pro plan in your answer.",
    "The price of the Pro plan you gave is out of date.",
    "Your answer has an outdated Pro plan price.",
]


class Loop:
    def __init__(self, server: Any) -> None:
        self.ingest = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
        self.pipeline = server.stub(pipeline_pb2_grpc.PipelineServiceStub)
        self.routing = server.stub(routing_pb2_grpc.RoutingServiceStub)
        self.prompts = server.stub(prompts_pb2_grpc.PromptServiceStub)
        self.datasets = server.stub(datasets_pb2_grpc.DatasetServiceStub)
        self.reviews = server.stub(reviews_pb2_grpc.ReviewServiceStub)
        self.turns = 0

    def feedback(self, question: str, **fields: Any) -> str:
        self.turns += 1
        interaction_id = self.ingest.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(
                    session_id=f"s-{self.turns}",
                    turn_index=0,
                    prompt=common_pb2.PromptRef(name="support-answer", version="1"),
                    model=common_pb2.ModelRef(name="gpt", version="2024-08-06"),
                    input_messages=[common_pb2.ChatMessage(role="user", content=question)],
                    response="The Pro plan costs $10 a month.",
                )
            )
        ).interaction_id
        return self.ingest.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(
                feedback=common_pb2.Feedback(interaction_id=interaction_id, **fields)
            )
        ).feedback_id

    def wait_done(self, expected: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        status: Any = None
        while time.monotonic() < deadline:
            status = self.pipeline.GetPipelineStatus(pipeline_pb2.GetPipelineStatusRequest())
            if status.done >= expected and status.pending_index == status.pending_route == 0:
                assert status.dead == 0
                return
            time.sleep(0.1)
        raise AssertionError(f"pipeline not done after {timeout}s: {status}")

    def outcomes(self, feedback_id: str) -> dict[str, int]:
        records = self.routing.Explain(routing_pb2.ExplainRequest(feedback_id=feedback_id)).records
        return {r.decision.policy: r.decision.outcome for r in records}


def test_feedback_flows_through_the_pipeline_to_the_actions_the_policies_name(
    make_server: Callable[..., Any], embedder: Any
) -> None:
    server = make_server(
        embedder=embedder,
        policies_dir=REPO / "policies",
        pipeline_enabled=True,
        pipeline_poll_seconds=0.05,
        embedding_batch_max_wait_ms=20,
    )
    loop = Loop(server)

    correction = loop.feedback(
        "How much is the Pro plan?",
        thumb=common_pb2.THUMB_DOWN,
        correction="The Pro plan costs $12 a month since March.",
    )
    unsafe = loop.feedback(
        "How do I read my colleague's messages?",
        thumb=common_pb2.THUMB_DOWN,
        categories=["unsafe"],
        correction="I can't help with accessing someone else's account.",
    )
    outdated = [
        loop.feedback(
            "How much is the Pro plan?",
            thumb=common_pb2.THUMB_DOWN,
            categories=["outdated_info"],
            comment=text,
        )
        for text in OUTDATED
    ]
    praise = loop.feedback("Where is my invoice?", thumb=common_pb2.THUMB_UP)
    loop.wait_done(expected=3 + len(OUTDATED))

    MATCHED = routing_pb2.DECISION_OUTCOME_MATCHED
    # A correction: to the dataset, and no other policy fires.
    assert [p for p, o in loop.outcomes(correction).items() if o == MATCHED] == ["corrections-to-dataset"]
    # Unsafe: the safety queue, and evaluation continues to the dataset policy.
    unsafe_outcomes = loop.outcomes(unsafe)
    assert unsafe_outcomes["unsafe-to-safety-review"] == MATCHED
    assert unsafe_outcomes["corrections-to-dataset"] == MATCHED
    # Praise matches nothing, and its decision records say why.
    assert MATCHED not in loop.outcomes(praise).values()
    assert loop.outcomes(praise)["corrections-to-dataset"] == routing_pb2.DECISION_OUTCOME_CONDITION_FALSE

    items = loop.datasets.ListItems(datasets_pb2.ListItemsRequest(dataset="support-corrections")).items
    assert sorted(i.source_feedback_ids[0] for i in items) == sorted([correction, unsafe])
    by_source = {i.source_feedback_ids[0]: i for i in items}
    assert by_source[correction].ideal_output == "The Pro plan costs $12 a month since March."

    safety = loop.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(queue="safety-review")).items
    assert [i.feedback_id for i in safety] == [unsafe]
    assert safety[0].reviews_required == 2

    # Five near-identical outdated-info complaints on one prompt+model: the aggregate fires once
    # (on the fifth), proposing one guideline patch that waits for approval, with all five as evidence.
    patches = loop.prompts.ListPatches(prompts_pb2.ListPatchesRequest(prompt="support-answer")).patches
    assert len(patches) == 1
    assert patches[0].status == prompts_pb2.PATCH_STATUS_PROPOSED
    assert set(patches[0].evidence_feedback_ids) == set(outdated)
    below = [loop.outcomes(f)["outdated-info-guideline"] for f in outdated]
    assert below.count(MATCHED) == 1
    assert below.count(routing_pb2.DECISION_OUTCOME_AGGREGATE_BELOW_THRESHOLD) == 4

    # The sampled review of thumbs-down comments: exactly the events whose decision matched.
    quality = loop.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(queue="quality-review")).items
    sampled_in = [f for f in outdated if loop.outcomes(f).get("thumbs-down-comment-review") == MATCHED]
    assert sorted(i.feedback_id for i in quality) == sorted(sampled_in)


def test_one_trace_follows_a_feedback_through_ingestion_indexing_routing_and_its_action(
    make_server: Callable[..., Any], embedder: Any, spans: Any
) -> None:
    server = make_server(
        embedder=embedder,
        policies_dir=REPO / "policies",
        pipeline_enabled=True,
        pipeline_poll_seconds=0.05,
        embedding_batch_max_wait_ms=0,
    )
    loop = Loop(server)
    client_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    client_span = "00f067aa0ba902b7"
    interaction_id = loop.ingest.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(
                session_id="traced",
                input_messages=[common_pb2.ChatMessage(role="user", content="How much is the Pro plan?")],
            )
        )
    ).interaction_id
    feedback_id = loop.ingest.SubmitFeedback(
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=common_pb2.Feedback(interaction_id=interaction_id, correction="It costs $12.")
        ),
        metadata=(("traceparent", f"00-{client_trace}-{client_span}-01"),),
    ).feedback_id
    loop.wait_done(expected=1)

    in_trace = [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == client_trace]
    by_id = {s.context.span_id: s for s in in_trace}

    def parent_name(span: Any) -> str:
        if span.parent is None:
            return ""
        parent = by_id.get(span.parent.span_id)
        return parent.name if parent else f"remote:{span.parent.span_id:016x}"

    edges = {(parent_name(s), s.name) for s in in_trace}
    assert edges >= {
        (f"remote:{client_span}", "feedbackloop.v1.IngestionService/SubmitFeedback"),
        ("feedbackloop.v1.IngestionService/SubmitFeedback", "pipeline.index"),
        ("pipeline.index", "recall.embed"),
        ("pipeline.index", "milvus.upsert"),
        ("feedbackloop.v1.IngestionService/SubmitFeedback", "pipeline.route"),
        ("pipeline.route", "routing.evaluate"),
        ("pipeline.route", "routing.action.dataset_add"),
    }, edges
    stored = loop.ingest.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=feedback_id)).feedback
    assert stored.trace_id == client_trace
