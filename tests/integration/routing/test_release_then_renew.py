"""A released claim stays released: a renewal or resolution that arrives after the release (the
console's page script renews on a timer, so one can be in flight when the reviewer leaves) is
refused, and the item stays free for the next reviewer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from routing_support import Harness, policy_files
from sqlalchemy import func, select, update

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.store.models import Feedback
from feedbackloop.store.routing_models import ReviewClaim, ReviewItemRow
from feedbackloop.v1 import common_pb2, reviews_pb2
from support import bearer, expect_error

HEAD = "apiVersion: feedbackloop/v1\n"
QUEUE = HEAD + "kind: ReviewQueue\nmetadata:\n  name: q\nspec:\n  sla: 24h\n"
DOWN_TO_Q = HEAD + (
    'kind: RoutingPolicy\nmetadata:\n  name: down\nspec:\n  when: feedback.thumb == "down"\n'
    "  actions:\n    - human_review: {queue: q}\n"
)
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def _one_item(h: Harness) -> str:
    h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q))
    h.feedback(h.interaction(), thumb=common_pb2.THUMB_DOWN)
    h.route_pending()
    (item,) = h.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(queue="q")).items
    return item.id


def _reviewer(h: Harness, name: str) -> str:
    return keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer=name)


def _claim(h: Harness, key: str) -> reviews_pb2.ClaimReviewItemResponse:
    return h.reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue="q"), metadata=bearer(key))


def _release(h: Harness, key: str, claim_id: str) -> None:
    h.reviews.ReleaseReviewClaim(
        reviews_pb2.ReleaseReviewClaimRequest(claim_id=claim_id), metadata=bearer(key)
    )


def _renew(h: Harness, key: str, claim_id: str) -> reviews_pb2.RenewReviewClaimResponse:
    return h.reviews.RenewReviewClaim(
        reviews_pb2.RenewReviewClaimRequest(claim_id=claim_id), metadata=bearer(key)
    )


def _resolve(h: Harness, key: str, claim_id: str) -> reviews_pb2.ResolveReviewItemResponse:
    return h.reviews.ResolveReviewItem(
        reviews_pb2.ResolveReviewItemRequest(claim_id=claim_id, verdict=reviews_pb2.REVIEW_VERDICT_ACCEPT),
        metadata=bearer(key),
    )


def _stats(h: Harness) -> tuple[int, int, int]:
    reader = keys.create_key(h.db, "default", frozenset({Scope.READ}))
    (q,) = h.reviews.GetReviewQueueStats(
        reviews_pb2.GetReviewQueueStatsRequest(), metadata=bearer(reader)
    ).queues
    return q.open, q.claimed, q.done


def _claim_row(h: Harness, claim_id: str) -> tuple[str, object]:
    with h.db.read() as session:
        row = session.get(ReviewClaim, claim_id)
        assert row is not None
        return row.status, row.lease_expires_at


def _reviewer_feedback(h: Harness) -> int:
    with h.db.read() as session:
        return (
            session.scalar(select(func.count()).select_from(Feedback).where(Feedback.source == "reviewer"))
            or 0
        )


def released(claim_id: str, verb: str) -> str:
    return f"claim_id: claim {claim_id} was released; there is nothing to {verb} (claim the item again)"


def test_a_renewal_after_the_release_is_refused_and_the_item_goes_to_the_next_reviewer(h: Harness) -> None:
    item = _one_item(h)
    alice, bob = _reviewer(h, "alice"), _reviewer(h, "bob")
    claim = _claim(h, alice)
    assert claim.item.id == item
    _release(h, alice, claim.claim_id)
    after_release = _claim_row(h, claim.claim_id)

    # The page's timer renewal lands after the release: refused, and the claim is unchanged.
    expect_error(lambda: _renew(h, alice, claim.claim_id), PRECONDITION, released(claim.claim_id, "renew"))
    assert _claim_row(h, claim.claim_id) == after_release
    assert after_release[0] == "released"
    assert _stats(h) == (1, 0, 0)  # a released claim holds nothing

    taken = _claim(h, bob)
    assert taken.item.id == item
    assert _stats(h) == (0, 1, 0)
    expect_error(lambda: _renew(h, alice, claim.claim_id), PRECONDITION, released(claim.claim_id, "renew"))
    assert _resolve(h, bob, taken.claim_id).item_done
    assert _stats(h) == (0, 0, 1)


def test_a_resolution_after_the_release_is_refused_and_writes_nothing(h: Harness) -> None:
    item = _one_item(h)
    alice, bob = _reviewer(h, "alice"), _reviewer(h, "bob")
    claim = _claim(h, alice)
    _release(h, alice, claim.claim_id)
    after_release = _claim_row(h, claim.claim_id)
    _release(h, alice, claim.claim_id)  # releasing again changes nothing
    assert _claim_row(h, claim.claim_id) == after_release
    expect_error(
        lambda: _resolve(h, alice, claim.claim_id), PRECONDITION, released(claim.claim_id, "resolve")
    )
    assert _reviewer_feedback(h) == 0
    with h.db.read() as session:
        row = session.get(ReviewItemRow, item)
        assert row is not None and (row.status, row.reviews_done) == ("open", 0)
    assert _claim_row(h, claim.claim_id)[0] == "released"
    assert _stats(h) == (1, 0, 0)
    assert _claim(h, bob).item.id == item


def test_a_reviewer_who_released_an_item_may_claim_it_again(h: Harness) -> None:
    item = _one_item(h)
    alice = _reviewer(h, "alice")
    claim = _claim(h, alice)
    _release(h, alice, claim.claim_id)
    again = _claim(h, alice)
    # One claim per reviewer and item: claiming again takes the same claim up, now held.
    assert (again.item.id, again.claim_id) == (item, claim.claim_id)
    assert _claim_row(h, claim.claim_id)[0] == "claimed"
    assert _stats(h) == (0, 1, 0)
    assert _renew(h, alice, again.claim_id).HasField("lease_expires_at")
    assert _resolve(h, alice, again.claim_id).item_done
    assert _stats(h) == (0, 0, 1)


def test_releasing_a_lapsed_claim_ends_it_too(h: Harness) -> None:
    _one_item(h)
    alice = _reviewer(h, "alice")
    claim = _claim(h, alice)
    with h.db.write() as session:
        session.execute(
            update(ReviewClaim)
            .where(ReviewClaim.id == claim.claim_id)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=5))
        )
    # A lapsed claim nobody took can be renewed; once its reviewer released it, it cannot.
    _release(h, alice, claim.claim_id)
    expect_error(lambda: _renew(h, alice, claim.claim_id), PRECONDITION, released(claim.claim_id, "renew"))
    assert _stats(h) == (1, 0, 0)
