"""An aggregate's review item is about one complaint: its lasting TopIssues group, kept over time.

Through the real server, Milvus Lite and the real model, on both store backends: the firings of
one complaint land on one item, another complaint under the same `group_by` value gets its own,
and once TopIssues has named the groups each item carries its group's id, which later firings
of the same complaint (past the aggregate's window, so sharing no evidence) find again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from routing_support import Harness, policy_files

from feedbackloop.v1 import (
    common_pb2,
    recall_pb2,
    recall_pb2_grpc,
    reviews_pb2,
    routing_pb2,
)
from support import ts

HEAD = "apiVersion: feedbackloop/v1\n"
QUEUE = HEAD + "kind: ReviewQueue\nmetadata:\n  name: q\nspec:\n  sla: 24h\n"
AGGREGATE = HEAD + (
    "kind: RoutingPolicy\nmetadata:\n  name: complaints\nspec:\n"
    '  when: feedback.thumb == "down"\n'
    "  aggregate: {min_count: 3, window: 24h, min_similarity: 0.42, group_by: [interaction.prompt_name]}\n"
    "  actions:\n    - human_review: {queue: q}\n"
)
PRICING = [
    "The bot quoted last year's price for the Pro plan.",
    "Pricing in the answer is outdated, Pro costs more now.",
    "It told me the old subscription price.",
    "wrong price for the pro plan, you raised it",
]
PRICING_LATER = [
    "The price it gave for the Pro plan is out of date.",
    "Outdated pricing again: the Pro subscription costs more.",
    "It still quotes the old Pro plan price.",
]
TONE = [
    "The assistant was rude and condescending to me.",
    "Very impolite answer, it mocked my question.",
    "Unfriendly, sarcastic tone in the reply.",
    "Rude, condescending answer from the assistant.",
]


def _complain(h: Harness, text: str, when: datetime) -> str:
    session = f"s-{text[:12]}-{when.timestamp()}"
    interaction = h.interaction(session, prompt="support-answer")
    occurred = ts(when)
    fid = h.feedback(interaction, session, thumb=common_pb2.THUMB_DOWN, comment=text, occurred_at=occurred)
    h.route_pending()
    return fid


def _action(h: Harness, feedback_id: str) -> routing_pb2.ActionResult:
    record = h.routing.Explain(routing_pb2.ExplainRequest(feedback_id=feedback_id)).records[0]
    assert record.decision.outcome == routing_pb2.DECISION_OUTCOME_MATCHED, record.decision.reason
    return record.decision.actions[0]


def _items(h: Harness) -> dict[str, reviews_pb2.ReviewItem]:
    listed = h.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(queue="q"))
    return {item.id: item for item in listed.items}


def _group_of(response: recall_pb2.TopIssuesResponse, members: list[str]) -> str:
    owners = [i for i in response.issues if set(i.member_ids) & set(members)]
    assert len(owners) == 1, [(i.label, list(i.member_ids)) for i in response.issues]
    return owners[0].group_id


def test_an_aggregate_review_item_follows_one_lasting_complaint(h: Harness) -> None:
    h.apply(policy_files(queue=QUEUE, routing=AGGREGATE))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=6)
    pricing = [_complain(h, text, start + timedelta(minutes=n)) for n, text in enumerate(PRICING[:3])]
    tone = [_complain(h, text, start + timedelta(hours=1, minutes=n)) for n, text in enumerate(TONE[:3])]

    # Before any group exists: one item per complaint, both under the same group_by value.
    pricing_item = _action(h, pricing[2])
    tone_item = _action(h, tone[2])
    assert pricing_item.status == tone_item.status == routing_pb2.ACTION_STATUS_CREATED
    assert pricing_item.resource_id != tone_item.resource_id
    items = _items(h)
    assert set(items) == {pricing_item.resource_id, tone_item.resource_id}
    assert items[pricing_item.resource_id].group_key == "interaction.prompt_name=support-answer"
    assert all(not item.issue_group_id for item in items.values())
    # A firing within the burst lands on the burst's item (they share evidence).
    pricing.append(_complain(h, PRICING[3], start + timedelta(minutes=5)))
    assert _action(h, pricing[3]).status == routing_pb2.ACTION_STATUS_EXISTING
    assert _action(h, pricing[3]).resource_id == pricing_item.resource_id

    window = common_pb2.TimeRange(start=ts(start - timedelta(days=1)), end=ts(start + timedelta(days=1)))
    top = recall_pb2_grpc.RecallServiceStub(h.channel).TopIssues(
        recall_pb2.TopIssuesRequest(time_range=window)
    )
    pricing_group, tone_group = _group_of(top, pricing), _group_of(top, tone)
    assert pricing_group != tone_group

    # The next firing of a complaint within its burst ties the burst's item to its lasting group.
    tone.append(_complain(h, TONE[3], start + timedelta(hours=1, minutes=5)))
    assert _action(h, tone[3]).resource_id == tone_item.resource_id
    assert _items(h)[tone_item.resource_id].issue_group_id == tone_group

    # Three days later, outside the aggregate's 24 h window (no evidence in common), each
    # complaint returns: its firings land on its item, through the lasting group. The pricing
    # item had no group yet (it was opened and last fired before TopIssues ran).
    later = start + timedelta(days=3)
    again = [_complain(h, text, later + timedelta(minutes=n)) for n, text in enumerate(PRICING_LATER)]
    rude = [_complain(h, text, later + timedelta(hours=1, minutes=n)) for n, text in enumerate(TONE[:3])]
    assert (_action(h, again[2]).status, _action(h, again[2]).resource_id) == (
        routing_pb2.ACTION_STATUS_EXISTING,
        pricing_item.resource_id,
    )
    assert (_action(h, rude[2]).status, _action(h, rude[2]).resource_id) == (
        routing_pb2.ACTION_STATUS_EXISTING,
        tone_item.resource_id,
    )
    items = _items(h)
    assert set(items) == {pricing_item.resource_id, tone_item.resource_id}
    assert items[pricing_item.resource_id].issue_group_id == pricing_group
    assert items[tone_item.resource_id].issue_group_id == tone_group
    assert items[pricing_item.resource_id].feedback_id == pricing[2]

    # A plan's backtest counts the review items as live routing opened them: one per complaint.
    plan = h.routing.PlanPolicies(
        routing_pb2.PlanPoliciesRequest(
            files=policy_files(queue=QUEUE, routing=AGGREGATE), backtest_window={"seconds": 8 * 86400}
        )
    )
    backtest = plan.backtest.policies[0]
    assert backtest.actions[0].count == 2, plan.plan_text
    assert set(backtest.actions[0].sample_feedback_ids) == {pricing[2], tone[2]}
