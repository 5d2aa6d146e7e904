"""Blind review holds in the API itself: a claimed aggregate item's evidence leaves out the
verdicts reviewers wrote, whatever the client.

A verdict is feedback like any other (indexed, routed), so an aggregate whose condition it meets
counts it among the similar feedback that made the policy fire. Through the real server, Milvus
Lite and the real model, on both store backends: one reviewer's verdict becomes one of an
aggregate's three; listing the item (`read`) shows all three, and the next reviewer's claim is
handed the end users' two.
"""

from __future__ import annotations

from routing_support import Harness, policy_files

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.v1 import common_pb2, reviews_pb2
from support import bearer

HEAD = "apiVersion: feedbackloop/v1\n"
QUEUES = "---\n".join(
    HEAD + f"kind: ReviewQueue\nmetadata:\n  name: {name}\nspec:\n  sla: 24h\n" for name in ("triage", "q")
)
# The triage turn goes to its own queue (and stops there); any other thumbs down counts towards
# the aggregate, whoever wrote it: the condition does not ask for `feedback.source == "end_user"`.
ROUTING = (
    HEAD
    + "kind: RoutingPolicy\nmetadata:\n  name: triage\nspec:\n"
    + '  when: interaction.prompt_name == "triage"\n  priority: 200\n'
    + "  actions:\n    - human_review: {queue: triage}\n"
    + "---\n"
    + HEAD
    + "kind: RoutingPolicy\nmetadata:\n  name: complaints\nspec:\n"
    + '  when: feedback.thumb == "down"\n  priority: 100\n'
    + "  aggregate: {min_count: 3, window: 24h, min_similarity: 0.8}\n"
    + "  actions:\n    - human_review: {queue: q}\n"
)
QUESTION = "How much is the Pro plan?"
COMPLAINT = "The Pro plan price it quoted is outdated, that was last year's price list."
VERDICT = "The Pro plan price it quoted is outdated, that was last year's price list (confirmed in review)."


def _reviewer(h: Harness, name: str) -> str:
    return keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer=name)


def _claim(h: Harness, key: str, queue: str) -> reviews_pb2.ClaimReviewItemResponse:
    return h.reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue=queue), metadata=bearer(key))


def _complain(h: Harness, session: str) -> str:
    turn = h.interaction(session, question=QUESTION)
    fid = h.feedback(turn, session, thumb=common_pb2.THUMB_DOWN, comment=COMPLAINT)
    h.route_pending()
    return fid


def test_a_claimed_aggregate_item_is_handed_without_other_reviewers_verdicts(h: Harness) -> None:
    h.apply(policy_files(queues=QUEUES, routing=ROUTING))
    triage_turn = h.interaction("triage", question=QUESTION, prompt="triage")
    h.feedback(triage_turn, "triage", thumb=common_pb2.THUMB_UP)
    h.route_pending()
    earlier = _complain(h, "earlier")  # the aggregate's first

    # The first reviewer rejects the triage turn in the complaint's words: REVIEWER feedback the
    # aggregate's condition holds for (its second).
    alice = _reviewer(h, "alice")
    triage = _claim(h, alice, "triage")
    verdict = h.reviews.ResolveReviewItem(
        reviews_pb2.ResolveReviewItemRequest(
            claim_id=triage.claim_id, verdict=reviews_pb2.REVIEW_VERDICT_REJECT, comment=VERDICT
        ),
        metadata=bearer(alice),
    ).feedback_id
    h.route_pending()
    later = _complain(h, "later")  # the third: the aggregate fires

    (listed,) = h.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(queue="q")).items
    assert listed.feedback_id == later
    assert sorted(listed.evidence_feedback_ids) == sorted([later, earlier, verdict])

    claimed = _claim(h, _reviewer(h, "bob"), "q").item
    assert claimed.id == listed.id
    assert list(claimed.evidence_feedback_ids) == [f for f in listed.evidence_feedback_ids if f != verdict]
    assert claimed.feedback_id == later and claimed.feedback.comment == COMPLAINT
