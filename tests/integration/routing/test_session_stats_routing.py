"""Session stats through the real server: feedback a review resolution creates is counted in
its session like any other, and a policy sees the counts stored with each event."""

from __future__ import annotations

from routing_support import Harness, policy_files
from sqlalchemy import select

from feedbackloop.store import session_stats
from feedbackloop.store.models import Feedback
from feedbackloop.store.routing_models import DecisionRecord
from feedbackloop.v1 import common_pb2, reviews_pb2

HEAD = "apiVersion: feedbackloop/v1\n"
QUEUE = HEAD + "kind: ReviewQueue\nmetadata:\n  name: q\nspec:\n  sla: 24h\n"
# End users' complaints go to review; a session whose third feedback is a complaint is noted.
POLICIES = HEAD + (
    "kind: RoutingPolicy\nmetadata:\n  name: down\nspec:\n"
    '  when: feedback.thumb == "down" && feedback.source == "end_user"\n'
    "  actions:\n    - human_review: {queue: q, priority: 70}\n"
    "---\n" + HEAD + "kind: RoutingPolicy\nmetadata:\n  name: third-complaint\nspec:\n"
    "  when: session.feedback_count == 3 && session.negative_count == 3 && session.turn_count == 1\n"
    "  priority: 90\n  continue: true\n"
    "  actions:\n    - human_review: {queue: q, priority: 90}\n"
)


def test_reviewer_feedback_counts_in_its_session_and_policies_read_the_stored_counts(h: Harness) -> None:
    h.apply(policy_files(queue=QUEUE, routing=POLICIES))
    i = h.interaction("s1")
    first = h.feedback(i, "s1", thumb=common_pb2.THUMB_DOWN)
    h.route_pending()
    claim = h.reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue="q"))
    resolved = h.reviews.ResolveReviewItem(
        reviews_pb2.ResolveReviewItemRequest(
            claim_id=claim.claim_id, verdict=reviews_pb2.REVIEW_VERDICT_REJECT
        )
    )
    third = h.feedback(i, "s1", thumb=common_pb2.THUMB_DOWN)
    h.route_pending()
    with h.db.read() as session:
        rows = {fid: session.get(Feedback, fid) for fid in (first, resolved.feedback_id, third)}
        assert rows[resolved.feedback_id] is not None
        assert rows[resolved.feedback_id].source == "reviewer"  # type: ignore[union-attr]
        stored = [
            (r.session_turn_count, r.session_feedback_count, r.session_negative_count)  # type: ignore[union-attr]
            for r in rows.values()
        ]
        assert stored == [(1, 1, 1), (1, 2, 2), (1, 3, 3)]  # a rejecting review is a complaint
        assert session_stats.current(session, "default", "s1") == session_stats.Counts(1, 3, 3)
        matched = {
            (d.feedback_id, d.policy)
            for d in session.scalars(select(DecisionRecord).where(DecisionRecord.outcome == "matched"))
        }
    assert (third, "third-complaint") in matched
    assert (first, "third-complaint") not in matched
    assert (resolved.feedback_id, "down") not in matched  # reviewer feedback is not an end user's
