"""Releasing and renewing claims, skipping items, and each queue's progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from routing_support import Harness, policy_files
from sqlalchemy import update

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.store.routing_models import ReviewClaim, ReviewItemRow
from feedbackloop.v1 import common_pb2, reviews_pb2
from support import bearer, code_of, expect_error

HEAD = "apiVersion: feedbackloop/v1\n"
QUEUES = (
    HEAD
    + "kind: ReviewQueue\nmetadata:\n  name: q\nspec:\n  sla: 24h\n"
    + "---\n"
    + HEAD
    + "kind: ReviewQueue\nmetadata:\n  name: empty\nspec:\n  sla: 1h\n"
)
DOWN_TO_Q = HEAD + (
    'kind: RoutingPolicy\nmetadata:\n  name: down\nspec:\n  when: feedback.thumb == "down"\n'
    "  actions:\n    - human_review: {queue: q}\n"
)
DENIED = grpc.StatusCode.PERMISSION_DENIED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _enqueue(h: Harness, count: int) -> list[str]:
    """`count` open items in queue q; their ids, most urgent first."""
    h.apply(policy_files(queue=QUEUES, routing=DOWN_TO_Q))
    turn = h.interaction()
    for _ in range(count):
        h.feedback(turn, thumb=common_pb2.THUMB_DOWN)
    h.route_pending()
    listed = h.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(queue="q")).items
    assert len(listed) == count
    return [item.id for item in listed]


def _reviewer(h: Harness, name: str, *scopes: Scope) -> str:
    return keys.create_key(h.db, "default", frozenset(scopes or {Scope.REVIEW}), reviewer=name)


def _claim(h: Harness, key: str, skip: tuple[str, ...] = ()) -> reviews_pb2.ClaimReviewItemResponse:
    return h.reviews.ClaimReviewItem(
        reviews_pb2.ClaimReviewItemRequest(queue="q", skip_item_ids=skip), metadata=bearer(key)
    )


def _release(h: Harness, key: str, claim_id: str) -> reviews_pb2.ReleaseReviewClaimResponse:
    return h.reviews.ReleaseReviewClaim(
        reviews_pb2.ReleaseReviewClaimRequest(claim_id=claim_id), metadata=bearer(key)
    )


def _renew(h: Harness, key: str, claim_id: str) -> reviews_pb2.RenewReviewClaimResponse:
    return h.reviews.RenewReviewClaim(
        reviews_pb2.RenewReviewClaimRequest(claim_id=claim_id), metadata=bearer(key)
    )


def _resolve(h: Harness, key: str, claim_id: str) -> None:
    h.reviews.ResolveReviewItem(
        reviews_pb2.ResolveReviewItemRequest(claim_id=claim_id, verdict=reviews_pb2.REVIEW_VERDICT_ACCEPT),
        metadata=bearer(key),
    )


def _lapse(h: Harness, claim_id: str) -> None:
    with h.db.write() as session:
        session.execute(
            update(ReviewClaim)
            .where(ReviewClaim.id == claim_id)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=5))
        )


def _stats(h: Harness, key: str | None = None, queue: str = "") -> dict[str, tuple[int, int, int, int]]:
    response = h.reviews.GetReviewQueueStats(
        reviews_pb2.GetReviewQueueStatsRequest(queue=queue), metadata=bearer(key) if key else None
    )
    return {s.queue: (s.open, s.claimed, s.done, s.past_sla) for s in response.queues}


def test_a_released_item_is_open_to_another_reviewer_at_once(h: Harness) -> None:
    (item,) = _enqueue(h, 1)
    alice, bob = _reviewer(h, "alice"), _reviewer(h, "bob")
    claim = _claim(h, alice)
    assert claim.item.id == item
    assert not _claim(h, bob).HasField("item")  # held by alice's lease
    expect_error(
        lambda: _release(h, bob, claim.claim_id), DENIED, "claim_id: this claim belongs to another reviewer"
    )
    assert isinstance(_release(h, alice, claim.claim_id), reviews_pb2.ReleaseReviewClaimResponse)
    _release(h, alice, claim.claim_id)  # releasing again changes nothing
    taken = _claim(h, bob)
    assert taken.item.id == item
    # Alice's released claim cannot be resolved any more: the review went to bob.
    assert code_of(lambda: _resolve(h, alice, claim.claim_id))[0] == PRECONDITION
    _resolve(h, bob, taken.claim_id)
    expect_error(
        lambda: _release(h, bob, taken.claim_id),
        PRECONDITION,
        f"claim_id: claim {taken.claim_id} is resolved; there is nothing to release",
    )


def test_renewing_extends_the_lease_until_another_reviewer_takes_a_lapsed_one(h: Harness) -> None:
    (item,) = _enqueue(h, 1)
    alice, bob = _reviewer(h, "alice"), _reviewer(h, "bob")
    claim = _claim(h, alice)
    before = claim.lease_expires_at.ToDatetime(tzinfo=UTC)
    renewed = _renew(h, alice, claim.claim_id).lease_expires_at.ToDatetime(tzinfo=UTC)
    assert renewed >= before and renewed > datetime.now(UTC) + timedelta(minutes=14)
    expect_error(
        lambda: _renew(h, bob, claim.claim_id), DENIED, "claim_id: this claim belongs to another reviewer"
    )

    # Lapsed, but nobody took it: renewing picks it up again.
    _lapse(h, claim.claim_id)
    assert _renew(h, alice, claim.claim_id).lease_expires_at.ToDatetime(tzinfo=UTC) > datetime.now(UTC)
    assert not _claim(h, bob).HasField("item")

    # Lapsed and taken by bob: alice's renewal is refused and bob keeps it.
    _lapse(h, claim.claim_id)
    with h.db.read() as session:
        lapsed_at = session.get(ReviewClaim, claim.claim_id).lease_expires_at  # type: ignore[union-attr]
    bobs = _claim(h, bob)
    assert bobs.item.id == item
    expect_error(
        lambda: _renew(h, alice, claim.claim_id),
        PRECONDITION,
        f"claim_id: the lease on item {item} expired at {lapsed_at.isoformat()} and another reviewer has claimed it",
    )
    _resolve(h, bob, bobs.claim_id)
    expect_error(
        lambda: _renew(h, bob, bobs.claim_id),
        PRECONDITION,
        f"claim_id: claim {bobs.claim_id} is resolved; there is nothing to renew",
    )


def test_skipping_offers_the_next_item_and_leaves_the_skipped_one_open(h: Harness) -> None:
    first, second = _enqueue(h, 2)
    alice, bob = _reviewer(h, "alice"), _reviewer(h, "bob")
    claim = _claim(h, alice)
    assert claim.item.id == first
    _release(h, alice, claim.claim_id)
    assert _claim(h, alice, skip=(first,)).item.id == second
    assert not _claim(h, alice, skip=(first, second)).HasField("item")
    assert _claim(h, bob).item.id == first  # skipping is one reviewer's choice, not the queue's
    expect_error(lambda: _claim(h, alice, skip=(first, "")), INVALID, "skip_item_ids[1]: is required")
    expect_error(
        lambda: _claim(h, alice, skip=tuple(f"ri_{i}" for i in range(101))),
        INVALID,
        "skip_item_ids: holds 101 ids; the limit is 100",
    )


def test_queue_stats_count_open_claimed_done_and_past_sla(h: Harness) -> None:
    items = _enqueue(h, 4)
    alice, bob = _reviewer(h, "alice"), _reviewer(h, "bob")
    reader = keys.create_key(h.db, "default", frozenset({Scope.READ}))
    assert _stats(h, reader) == {"empty": (0, 0, 0, 0), "q": (4, 0, 0, 0)}
    done = _claim(h, alice)
    _resolve(h, alice, done.claim_id)
    held = _claim(h, bob)
    lapsed = _claim(h, alice)
    _lapse(h, lapsed.claim_id)  # a lapsed lease holds nothing: open again
    with h.db.write() as session:
        session.execute(
            update(ReviewItemRow)
            .where(ReviewItemRow.id.in_([items[3], done.item.id]))
            .values(due_at=datetime.now(UTC) - timedelta(hours=1))
        )
    # 4 items: 1 done (past due, but done), 1 claimed by bob, 2 open of which one is past due.
    assert held.item.id != done.item.id
    assert _stats(h, reader) == {"empty": (0, 0, 0, 0), "q": (2, 1, 1, 1)}
    assert _stats(h, reader, queue="q") == {"q": (2, 1, 1, 1)}
    assert _stats(h, reader, queue="empty") == {"empty": (0, 0, 0, 0)}
    expect_error(
        lambda: _stats(h, reader, queue="qq"),
        grpc.StatusCode.NOT_FOUND,
        'queue: no review queue "qq" in this project (the live policy set declares: empty, q)',
    )
    expect_error(lambda: _stats(h, alice), DENIED, "this API key lacks the 'read' scope")
    expect_error(
        lambda: _stats(h, reader, queue="q\x00"),
        INVALID,
        "queue: must not contain control characters (U+0000 at position 1)",
    )


def test_claims_are_the_projects_own(h: Harness) -> None:
    _enqueue(h, 1)
    alice = _reviewer(h, "alice")
    claim = _claim(h, alice)
    outsider = keys.create_key(h.db, "other", frozenset({Scope.REVIEW, Scope.READ}), reviewer="alice")
    for call in (_release, _renew, _resolve):
        expect_error(
            lambda c=call: c(h, outsider, claim.claim_id),  # type: ignore[misc]
            grpc.StatusCode.NOT_FOUND,
            f"claim_id: no claim {claim.claim_id}",
        )
    assert (
        code_of(
            lambda: h.reviews.ReleaseReviewClaim(
                reviews_pb2.ReleaseReviewClaimRequest(project="default", claim_id=claim.claim_id),
                metadata=bearer(outsider),
            )
        )[0]
        == DENIED
    )
    assert _stats(h, outsider) == {}
    expect_error(lambda: _release(h, alice, ""), INVALID, "claim_id: is required")
    expect_error(lambda: _renew(h, alice, ""), INVALID, "claim_id: is required")
