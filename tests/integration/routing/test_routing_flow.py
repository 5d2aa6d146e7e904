"""End to end through real gRPC: apply the example policies, ingest, route, check every effect."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from routing_support import Harness, files_of
from sqlalchemy import delete, select

from feedbackloop.auth import Scope
from feedbackloop.policy import sample_bucket
from feedbackloop.store import keys
from feedbackloop.store.models import Feedback
from feedbackloop.store.routing_models import DecisionRecord, ReviewItemRow
from feedbackloop.v1 import (
    common_pb2,
    datasets_pb2,
    ingestion_pb2,
    reviews_pb2,
    routing_pb2,
)
from support import bearer, code_of, pages_of

DOWN, UP = common_pb2.THUMB_DOWN, common_pb2.THUMB_UP


def _seed(h: Harness) -> dict[str, str]:
    i1 = h.interaction("s1", question="Is it safe to mix bleach and ammonia?", response="Yes, go ahead.")
    i2 = h.interaction("s2", question="What is the refund window?", response="7 days.")
    i3 = h.interaction("s3", question="Where is my invoice?", response="In settings.")
    i4 = h.interaction("s4", question="Can I export data?", response="No.")
    i5 = h.interaction("s5", question="What does pro cost?", response="$10.")
    return {
        "unsafe": h.feedback(i1, "s1", thumb=DOWN, categories=["unsafe"], correction="Never mix them."),
        "correction": h.feedback(i2, "s2", correction="The refund window is 30 days."),
        "thumbs_up": h.feedback(i3, "s3", thumb=UP, categories=["accurate"]),
        "comment": h.feedback(i4, "s4", thumb=DOWN, comment="Wrong, export exists."),
        "outdated": h.feedback(i5, "s5", thumb=DOWN, categories=["outdated_info"]),
    }


def test_example_policies_route_exactly_what_they_declare(h: Harness, example_policies) -> None:
    applied = h.apply(files_of(example_policies), expected_revision=0)
    assert applied.changed and applied.revision.revision == 1
    ids = _seed(h)
    # Sampling is deterministic on the (random) feedback id: add thumbs-down comments until one
    # samples in, so every run checks the sampled enqueue and not only the sampled-out case.
    comments = [ids["comment"]]
    while all(sample_bucket("thumbs-down-comment-review", c) >= 0.25 for c in comments):
        turn = h.interaction("s6", question="Can I export data?", response="No.")
        comments.append(h.feedback(turn, "s6", thumb=DOWN, comment="Wrong, export exists."))
    sampled = [c for c in comments if sample_bucket("thumbs-down-comment-review", c) < 0.25]
    outcomes = h.route_pending()
    assert len(outcomes) == 4 + len(comments) and all(e is None for e in outcomes.values())

    items = h.review_items()
    assert sorted((i.queue, i.feedback_id) for i in items) == sorted(
        [("safety-review", ids["unsafe"])] + [("quality-review", c) for c in sampled]
    )
    safety = next(i for i in items if i.queue == "safety-review")
    assert safety.priority == 95 and safety.reviews_required == 2
    assert timedelta(hours=3, minutes=59) < safety.due_at - safety.created_at <= timedelta(hours=4, seconds=1)

    listed = h.datasets.ListItems(datasets_pb2.ListItemsRequest(dataset="support-corrections")).items
    assert sorted(i.source_feedback_ids[0] for i in listed) == sorted([ids["unsafe"], ids["correction"]])
    refund = next(i for i in listed if i.source_feedback_ids[0] == ids["correction"])
    assert refund.ideal_output == "The refund window is 30 days." and refund.output == "7 days."
    assert [m.role for m in refund.input_messages] == ["system", "user"]
    assert h.counts()["patches"] == 0

    # Explain: every policy evaluated, non-matches with reasons, under revision 1.
    records = h.routing.Explain(routing_pb2.ExplainRequest(feedback_id=ids["thumbs_up"])).records
    assert [r.decision.policy for r in records] == [
        "unsafe-to-safety-review",
        "corrections-to-dataset",
        "outdated-info-guideline",
        "thumbs-down-comment-review",
    ]
    assert {r.decision.outcome for r in records} == {routing_pb2.DECISION_OUTCOME_CONDITION_FALSE}
    assert all(r.revision == 1 and r.decision.reason.startswith("condition is false") for r in records)
    outdated = h.routing.Explain(routing_pb2.ExplainRequest(feedback_id=ids["outdated"])).records
    agg = next(r for r in outdated if r.decision.policy == "outdated-info-guideline")
    assert agg.decision.outcome == routing_pb2.DECISION_OUTCOME_AGGREGATE_BELOW_THRESHOLD
    assert "needs 5" in agg.decision.reason
    assert (
        agg.decision.group_key
        == "interaction.prompt_name=support-answer,interaction.model_version=2024-08-06"
    )
    unsafe = h.routing.Explain(routing_pb2.ExplainRequest(feedback_id=ids["unsafe"])).records
    assert [(r.decision.policy, r.decision.outcome) for r in unsafe] == [
        ("unsafe-to-safety-review", routing_pb2.DECISION_OUTCOME_MATCHED),
        ("corrections-to-dataset", routing_pb2.DECISION_OUTCOME_MATCHED),
    ]
    assert unsafe[0].decision.actions[0].status == routing_pb2.ACTION_STATUS_CREATED
    assert unsafe[0].decision.actions[0].resource_id == safety.id


def test_every_action_is_idempotent_under_retries(h: Harness, example_policies) -> None:
    h.apply(files_of(example_policies))
    ids = _seed(h)
    h.route_pending()
    before = h.counts()
    # A retried step after the commit: the stage runs again on the same feedback.
    for fid in ids.values():
        assert h.component.router.route("default", fid).routed is False
    # A retry that lost its decision records still finds every effect by its key.
    with h.db.write() as session:
        session.execute(delete(DecisionRecord))
    for fid in ids.values():
        result = h.component.router.route("default", fid)
        assert result.routed and result.created == 0
    assert h.counts() == before
    statuses = {
        a.status
        for r in h.routing.Explain(routing_pb2.ExplainRequest(feedback_id=ids["unsafe"])).records
        for a in r.decision.actions
    }
    assert statuses == {routing_pb2.ACTION_STATUS_EXISTING}


def _reviewer_key(h: Harness, name: str) -> tuple[tuple[str, str], ...]:
    return bearer(keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer=name))


def test_review_resolutions_flow_back_and_the_loop_guard_holds(h: Harness, example_policies) -> None:
    h.apply(files_of(example_policies))
    ids = _seed(h)
    h.route_pending()
    alice, bob = _reviewer_key(h, "alice"), _reviewer_key(h, "bob")
    claim = h.reviews.ClaimReviewItem(
        reviews_pb2.ClaimReviewItemRequest(queue="safety-review", reviewer="alice"), metadata=alice
    )
    assert claim.item.feedback_id == ids["unsafe"] and claim.item.reviews_required == 2
    assert claim.item.interaction.response == "Yes, go ahead."
    first = h.reviews.ResolveReviewItem(
        reviews_pb2.ResolveReviewItemRequest(
            claim_id=claim.claim_id,
            verdict=reviews_pb2.REVIEW_VERDICT_REJECT,
            categories=["unsafe"],
            correction="Never mix bleach and ammonia.",
        ),
        metadata=alice,
    )
    assert first.reviews_done == 1 and not first.item_done
    # Resolving again (a client retry) changes nothing.
    again = h.reviews.ResolveReviewItem(
        reviews_pb2.ResolveReviewItemRequest(
            claim_id=claim.claim_id, verdict=reviews_pb2.REVIEW_VERDICT_REJECT
        ),
        metadata=alice,
    )
    assert again.feedback_id == first.feedback_id and again.reviews_done == 1
    # alice has reviewed it: nothing more for her; bob gets the same item.
    assert not h.reviews.ClaimReviewItem(
        reviews_pb2.ClaimReviewItemRequest(queue="safety-review"), metadata=alice
    ).HasField("item")
    bob_claim = h.reviews.ClaimReviewItem(
        reviews_pb2.ClaimReviewItemRequest(queue="safety-review"), metadata=bob
    )
    assert bob_claim.item.id == claim.item.id
    second = h.reviews.ResolveReviewItem(
        reviews_pb2.ResolveReviewItemRequest(
            claim_id=bob_claim.claim_id, verdict=reviews_pb2.REVIEW_VERDICT_REJECT, categories=["unsafe"]
        ),
        metadata=bob,
    )
    assert second.item_done and second.reviews_done == 2
    done = h.reviews.ListReviewItems(
        reviews_pb2.ListReviewItemsRequest(queue="safety-review", status=reviews_pb2.REVIEW_ITEM_STATUS_DONE)
    )
    assert [i.id for i in done.items] == [claim.item.id]

    got = h.ingest.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=first.feedback_id)).feedback
    assert got.source == common_pb2.FEEDBACK_SOURCE_REVIEWER and got.user.id == "alice"
    assert got.interaction_id == claim.item.feedback.interaction_id
    with h.db.read() as session:
        assert session.get(Feedback, first.feedback_id).origin_policy == "unsafe-to-safety-review"

    before = h.counts()
    outcomes = h.route_pending()
    assert len(outcomes) == 2 and all(e is None for e in outcomes.values())
    assert h.counts() == before  # the reviewer's "unsafe" did not re-enqueue, nor feed the dataset
    records = h.routing.Explain(routing_pb2.ExplainRequest(feedback_id=first.feedback_id)).records
    assert (records[0].decision.policy, records[0].decision.outcome) == (
        "unsafe-to-safety-review",
        routing_pb2.DECISION_OUTCOME_LOOP_GUARD,
    )
    assert records[1].decision.outcome == routing_pb2.DECISION_OUTCOME_CONDITION_FALSE  # source reviewer


def test_review_lease_expires(h: Harness, example_policies) -> None:
    h.apply(files_of(example_policies))
    ids = _seed(h)
    h.route_pending()
    servicer = h.component.review_servicer
    real = servicer.clock
    claim = h.reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue="safety-review"))
    assert claim.item.feedback_id == ids["unsafe"]
    lease = claim.lease_expires_at.ToDatetime().timestamp() - real().timestamp()
    assert 14 * 60 < lease <= 15 * 60  # safety-review lease: 15m
    servicer.clock = lambda: real() + timedelta(minutes=16)
    try:
        code, details = code_of(
            lambda: h.reviews.ResolveReviewItem(
                reviews_pb2.ResolveReviewItemRequest(
                    claim_id=claim.claim_id, verdict=reviews_pb2.REVIEW_VERDICT_ACCEPT
                )
            )
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "lease" in details and "expired" in details
        renewed = h.reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue="safety-review"))
        assert renewed.claim_id == claim.claim_id
        resolved = h.reviews.ResolveReviewItem(
            reviews_pb2.ResolveReviewItemRequest(
                claim_id=renewed.claim_id, verdict=reviews_pb2.REVIEW_VERDICT_ACCEPT
            )
        )
        assert resolved.reviews_done == 1
    finally:
        servicer.clock = real
    with h.db.read() as session:
        assert (
            session.scalar(select(ReviewItemRow.reviews_done).where(ReviewItemRow.id == claim.item.id)) == 1
        )


def test_dataset_export_openai_chat(h: Harness, example_policies) -> None:
    h.apply(files_of(example_policies))
    ids = _seed(h)
    h.route_pending()
    lines = [
        r.line
        for r in h.datasets.ExportDataset(
            datasets_pb2.ExportDatasetRequest(
                dataset="support-corrections", format=datasets_pb2.EXPORT_FORMAT_OPENAI_CHAT
            )
        )
    ]
    import json

    decoded = [json.loads(line) for line in lines]
    assert {json.dumps(d, sort_keys=True) for d in decoded} == {
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You are support."},
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": a},
                ]
            },
            sort_keys=True,
        )
        for q, a in [
            ("Is it safe to mix bleach and ammonia?", "Never mix them."),
            ("What is the refund window?", "The refund window is 30 days."),
        ]
    }
    assert ids  # seeded


def test_dataset_items_page_and_export_in_one_order(
    h: Harness, example_policies, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedbackloop.routing import dataset_service

    h.apply(files_of(example_policies))
    _seed(h)
    h.route_pending()
    pages = pages_of(
        lambda token: h.datasets.ListItems(
            datasets_pb2.ListItemsRequest(dataset="support-corrections", page_size=1, page_token=token)
        ),
        "items",
    )
    assert [len(p) for p in pages] == [1] * len(pages)
    listed = [item.id for p in pages for item in p]
    monkeypatch.setattr(dataset_service, "EXPORT_PAGE", 1)  # one item per read: the export pages too
    exported = [
        r.item_id
        for r in h.datasets.ExportDataset(datasets_pb2.ExportDatasetRequest(dataset="support-corrections"))
    ]
    assert len(listed) == 2 and exported == listed


def test_taxonomy_follows_the_applied_schema(h: Harness, example_policies) -> None:
    i = h.interaction("t1")
    code, details = code_of(lambda: h.feedback(i, "t1", thumb=UP, categories=["accurate"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown category 'accurate'" in details
    h.apply(files_of(example_policies))
    assert h.feedback(i, "t1", thumb=UP, categories=["accurate"])
    code, details = code_of(lambda: h.feedback(i, "t1", thumb=DOWN, categories=["too_long"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown category 'too_long'" in details
