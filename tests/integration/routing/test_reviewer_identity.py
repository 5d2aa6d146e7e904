"""Reviews belong to the key's reviewer identity, and reviewing needs the `review` scope."""

from __future__ import annotations

import grpc
import pytest
from routing_support import Harness, policy_files
from sqlalchemy import select

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.store.models import Feedback
from feedbackloop.store.routing_models import ReviewClaim, ReviewItemRow
from feedbackloop.v1 import common_pb2, reviews_pb2
from support import bearer, code_of, expect_error

HEAD = "apiVersion: feedbackloop/v1\n"
# Two independent reviews per item.
QUEUE = HEAD + "kind: ReviewQueue\nmetadata:\n  name: q\nspec:\n  sla: 24h\n  reviews_required: 2\n"
DOWN_TO_Q = HEAD + (
    'kind: RoutingPolicy\nmetadata:\n  name: down\nspec:\n  when: feedback.thumb == "down"\n'
    "  actions:\n    - human_review: {queue: q}\n"
)
DENIED = grpc.StatusCode.PERMISSION_DENIED
ACCEPT, REJECT = reviews_pb2.REVIEW_VERDICT_ACCEPT, reviews_pb2.REVIEW_VERDICT_REJECT


def _key_id(key: str) -> str:
    return key.split("_")[1]


def _enqueue(h: Harness, count: int = 1) -> list[str]:
    """`count` open review items in queue q; their feedback ids."""
    h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q))
    turn = h.interaction()
    ids = [h.feedback(turn, thumb=common_pb2.THUMB_DOWN) for _ in range(count)]
    h.route_pending()
    assert len(h.review_items()) == count
    return ids


def _claim(h: Harness, key: str | None, reviewer: str = "") -> reviews_pb2.ClaimReviewItemResponse:
    return h.reviews.ClaimReviewItem(
        reviews_pb2.ClaimReviewItemRequest(queue="q", reviewer=reviewer),
        metadata=bearer(key) if key else None,
    )


def _resolve(h: Harness, key: str | None, claim_id: str) -> reviews_pb2.ResolveReviewItemResponse:
    return h.reviews.ResolveReviewItem(
        reviews_pb2.ResolveReviewItemRequest(claim_id=claim_id, verdict=REJECT),
        metadata=bearer(key) if key else None,
    )


def _item(h: Harness) -> ReviewItemRow:
    (item,) = h.review_items()
    return item


def _claims(h: Harness) -> list[tuple[str, str]]:
    with h.db.read() as session:
        return sorted((c.reviewer, c.status) for c in session.scalars(select(ReviewClaim)))


def test_one_key_never_gives_two_independent_reviews(h: Harness) -> None:
    _enqueue(h)
    nameless = keys.create_key(h.db, "default", frozenset({Scope.REVIEW}))
    me = f"key:{_key_id(nameless)}"

    # Naming somebody else is refused, not silently recorded as the key.
    expect_error(
        lambda: _claim(h, nameless, reviewer="alice"),
        DENIED,
        f"reviewer: this API key reviews as '{me}' and cannot review as someone else",
    )
    assert _claims(h) == []
    claim = _claim(h, nameless, reviewer=me)  # repeating its own identity is fine
    first = _resolve(h, nameless, claim.claim_id)
    assert (first.reviews_done, first.item_done) == (1, False)
    # The same key again, by any name: it has reviewed this item, so nothing is left for it.
    assert not _claim(h, nameless).HasField("item")
    assert code_of(lambda: _claim(h, nameless, reviewer="bob"))[0] == DENIED
    assert (_item(h).status, _item(h).reviews_done) == ("open", 1)
    assert _claims(h) == [(me, "resolved")]

    alice = keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer="alice")
    second_claim = _claim(h, alice, reviewer="alice")
    assert second_claim.item.id == claim.item.id
    second = _resolve(h, alice, second_claim.claim_id)
    assert (second.reviews_done, second.item_done) == (2, True)
    with h.db.read() as session:
        users = {session.get(Feedback, f.feedback_id).user_id for f in (first, second)}  # type: ignore[union-attr]
        sources = {session.get(Feedback, f.feedback_id).source for f in (first, second)}  # type: ignore[union-attr]
    assert users == {me, "alice"} and sources == {"reviewer"}


def test_two_keys_of_one_reviewer_are_one_reviewer(h: Harness) -> None:
    _enqueue(h)
    laptop = keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer="alice")
    phone = keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer="alice")
    _resolve(h, laptop, _claim(h, laptop).claim_id)
    assert not _claim(h, phone).HasField("item")
    assert _item(h).reviews_done == 1


def test_a_claim_is_resolved_only_by_its_reviewer(h: Harness) -> None:
    _enqueue(h)
    alice = keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer="alice")
    bob = keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer="bob")
    claim = _claim(h, alice)
    message = "claim_id: this claim belongs to another reviewer"
    expect_error(lambda: _resolve(h, bob, claim.claim_id), DENIED, message)
    assert _item(h).reviews_done == 0 and _claims(h) == [("alice", "claimed")]
    _resolve(h, alice, claim.claim_id)
    # Blind review: bob cannot read alice's outcome back through her claim id either.
    expect_error(lambda: _resolve(h, bob, claim.claim_id), DENIED, message)
    bob_claim = _claim(h, bob)
    assert bob_claim.item.id == claim.item.id and bob_claim.item.reviews_done == 1


def test_reviewing_needs_the_review_scope(h: Harness) -> None:
    _enqueue(h)
    ingest = keys.create_key(h.db, "default", frozenset({Scope.INGEST}))
    read = keys.create_key(h.db, "default", frozenset({Scope.READ, Scope.INGEST}))
    lacks = "this API key lacks the 'review' scope"
    for key in (ingest, read):
        # An ingest key used to be handed the queued feedback and interaction here.
        expect_error(lambda k=key: _claim(h, k), DENIED, lacks)  # type: ignore[misc]
        expect_error(lambda k=key: _resolve(h, k, "rc_x"), DENIED, lacks)  # type: ignore[misc]
    assert _claims(h) == []
    # Listing the queue is reading: `read` lists, `review` alone does not.
    assert (
        len(h.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(), metadata=bearer(read)).items) == 1
    )
    reviewer = keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer="carol")
    expect_error(
        lambda: h.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(), metadata=bearer(reviewer)),
        DENIED,
        "this API key lacks the 'read' scope",
    )
    assert _claim(h, reviewer).item.queue == "q"


@pytest.mark.parametrize("who", ["admin", "anonymous"])
def test_admin_and_anonymous_review_as_one_identity_each(h: Harness, who: str) -> None:
    _enqueue(h)
    key = keys.create_key(h.db, "default", frozenset({Scope.ADMIN})) if who == "admin" else None
    me = f"key:{_key_id(key)}" if key else "key:anonymous"
    expect_error(
        lambda: _claim(h, key, reviewer="bob"),
        DENIED,
        f"reviewer: this API key reviews as '{me}' and cannot review as someone else",
    )
    _resolve(h, key, _claim(h, key).claim_id)
    assert not _claim(h, key).HasField("item")
    assert _claims(h) == [(me, "resolved")] and _item(h).reviews_done == 1
