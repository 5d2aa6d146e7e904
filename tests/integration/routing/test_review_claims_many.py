"""A reviewer who has resolved more items of a multi-review queue than one candidate batch still
gets the next open item."""

from __future__ import annotations

from routing_support import Harness, policy_files

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.v1 import common_pb2, reviews_pb2
from support import bearer

HEAD = "apiVersion: feedbackloop/v1\n"
QUEUE = HEAD + "kind: ReviewQueue\nmetadata:\n  name: q\nspec:\n  sla: 24h\n  reviews_required: 2\n"
DOWN_TO_Q = HEAD + (
    'kind: RoutingPolicy\nmetadata:\n  name: down\nspec:\n  when: feedback.thumb == "down"\n'
    "  actions:\n    - human_review: {queue: q}\n"
)
# More than the claim's candidate batch (200), so resolved items would fill it.
ITEMS = 203


def test_resolved_items_do_not_hide_the_rest_of_the_queue(h: Harness) -> None:
    h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q))
    turn = h.interaction()
    for _ in range(ITEMS):
        h.feedback(turn, thumb=common_pb2.THUMB_DOWN)
    h.route_pending()
    key = keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer="busy")
    seen: set[str] = set()
    for _ in range(ITEMS):
        claim = h.reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue="q"), metadata=bearer(key))
        assert claim.claim_id, f"no item offered after {len(seen)} resolved"
        assert claim.item.id not in seen
        seen.add(claim.item.id)
        h.reviews.ResolveReviewItem(
            reviews_pb2.ResolveReviewItemRequest(
                claim_id=claim.claim_id, verdict=reviews_pb2.REVIEW_VERDICT_ACCEPT
            ),
            metadata=bearer(key),
        )
    # Every item still needs a second reviewer, but not this one.
    done = h.reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue="q"), metadata=bearer(key))
    assert done.claim_id == ""
    other = keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer="second")
    assert h.reviews.ClaimReviewItem(
        reviews_pb2.ClaimReviewItemRequest(queue="q"), metadata=bearer(other)
    ).claim_id
