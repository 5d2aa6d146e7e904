"""Two reviewers resolving the two reviews of one item at the same moment both count.

On PostgreSQL the two resolutions really run at once (READ COMMITTED): each must read the item's
`reviews_done` under the row's lock, or both count from the same value and one review is lost,
leaving a fully reviewed item open. SQLite runs one write transaction at a time, so the race
cannot happen there and the test is PostgreSQL's alone.

The race is made certain, not left to timing: a transaction holds the item's row lock (as a
claim being taken does) while both resolutions are sent, and lets go only once both are
waiting for it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from routing_support import Harness, policy_files
from sqlalchemy import select, text

from feedbackloop.auth import Scope
from feedbackloop.store import keys
from feedbackloop.store.routing_models import ReviewClaim, ReviewItemRow
from feedbackloop.v1 import common_pb2, reviews_pb2
from support import bearer

HEAD = "apiVersion: feedbackloop/v1\n"
QUEUE = HEAD + "kind: ReviewQueue\nmetadata:\n  name: q\nspec:\n  sla: 24h\n  reviews_required: 2\n"
DOWN_TO_Q = HEAD + (
    'kind: RoutingPolicy\nmetadata:\n  name: down\nspec:\n  when: feedback.thumb == "down"\n'
    "  actions:\n    - human_review: {queue: q}\n"
)
WAIT_SECONDS = 30.0
# Backends waiting on the holder: on a lock it holds, or queued behind one that is (the second
# waiter for a row waits on the first, which holds the row's place in the queue).
BLOCKED_BY = text(
    """
    WITH RECURSIVE blocked(pid) AS (
        SELECT pid FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))
        UNION
        SELECT waiting.pid FROM pg_stat_activity AS waiting, blocked
        WHERE blocked.pid = ANY(pg_blocking_pids(waiting.pid))
    )
    SELECT count(*) FROM blocked
    """
)


def _resolve(h: Harness, key: str, claim_id: str) -> reviews_pb2.ResolveReviewItemResponse:
    return h.reviews.ResolveReviewItem(
        reviews_pb2.ResolveReviewItemRequest(claim_id=claim_id, verdict=reviews_pb2.REVIEW_VERDICT_REJECT),
        metadata=bearer(key),
        timeout=2 * WAIT_SECONDS,
    )


def test_two_resolutions_of_one_item_at_once_both_count(h: Harness) -> None:
    if h.db.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time: resolutions cannot race")
    h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q))
    h.feedback(h.interaction(), thumb=common_pb2.THUMB_DOWN)
    h.route_pending()
    (item,) = h.review_items()
    reviewers = [
        keys.create_key(h.db, "default", frozenset({Scope.REVIEW}), reviewer=n) for n in ("alice", "bob")
    ]
    claims = [
        h.reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue="q"), metadata=bearer(key))
        for key in reviewers
    ]
    assert [c.item.id for c in claims] == [item.id, item.id]

    with ThreadPoolExecutor(max_workers=2) as pool, h.db.write_engine.connect() as holder:
        holder.execute(select(ReviewItemRow.id).where(ReviewItemRow.id == item.id).with_for_update())
        holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
        try:
            sent = [
                pool.submit(_resolve, h, key, c.claim_id) for key, c in zip(reviewers, claims, strict=True)
            ]
            deadline = time.monotonic() + WAIT_SECONDS
            with h.db.read_engine.connect() as observer:
                while observer.execute(BLOCKED_BY, {"holder": holder_pid}).scalar_one() < 2:
                    observer.rollback()  # pg_stat_activity is read once per transaction
                    assert time.monotonic() < deadline, "the two resolutions never both waited on the item"
                    assert not any(f.done() for f in sent), [f.result() for f in sent if f.done()]
                    time.sleep(0.02)
        finally:
            holder.rollback()
        replies = [f.result() for f in sent]

    assert sorted((r.reviews_done, r.item_done) for r in replies) == [(1, False), (2, True)]
    (after,) = h.review_items()
    assert (after.reviews_done, after.status) == (2, "done")
    with h.db.read() as session:
        assert sorted(session.scalars(select(ReviewClaim.status))) == ["resolved", "resolved"]
