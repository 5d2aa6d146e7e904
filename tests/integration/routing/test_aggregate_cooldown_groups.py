"""An aggregate's cooldown, prompt patch and dataset item are about one complaint, like its review item.

Through the real server, Milvus Lite and the real model, on both store backends: once TopIssues
has named the lasting groups, a firing for one complaint does not cool down another complaint
under the same `group_by` value, the same complaint repeated within the cooldown does not fire
again, and the two complaints get a patch and a dataset item each. Before any group exists the
cooldown is the `group_by` value's, as for a policy without recall. A plan's backtest decides
the same cooldowns as live routing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from routing_support import Harness, policy_files
from sqlalchemy import select

from feedbackloop.store.routing_models import DatasetItemRow, PromptPatchRow
from feedbackloop.v1 import common_pb2, recall_pb2, recall_pb2_grpc, routing_pb2
from support import ts

HEAD = "apiVersion: feedbackloop/v1\n"
QUEUE = HEAD + "kind: ReviewQueue\nmetadata:\n  name: q\nspec:\n  sla: 24h\n"
PROMPT = HEAD + (
    "kind: Prompt\nmetadata:\n  name: support-answer\nspec:\n  variables: [product]\n"
    "  template: 'You help with {{product}}.'\n"
)
DATASET = HEAD + "kind: Dataset\nmetadata:\n  name: ds\nspec:\n  formats: [plain]\n  dedup_similarity: 0.95\n"
COOLED = HEAD + (
    "kind: RoutingPolicy\nmetadata:\n  name: cooled\nspec:\n"
    '  when: feedback.thumb == "down"\n'
    "  aggregate: {min_count: 3, window: 24h, min_similarity: 0.42, group_by: [interaction.prompt_name]}\n"
    "  cooldown: 12h\n"
    "  actions:\n"
    "    - human_review: {queue: q}\n"
    "    - prompt_patch: {prompt: support-answer, strategy: append_guideline, approval: required,"
    " template: 'Avoid: {{comment}}'}\n"
    "    - dataset_add: {dataset: ds}\n"
)
FILES = {"queue": QUEUE, "prompt": PROMPT, "dataset": DATASET, "routing": COOLED}
GROUP_KEY = "interaction.prompt_name=support-answer"
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
]
# Distinct answers, so the two complaints' dataset items are not near-duplicates of each other.
ANSWERS = {"pricing": "It costs $10.", "tone": "Look it up yourself, it is not that hard."}

MATCHED = routing_pb2.DECISION_OUTCOME_MATCHED
BELOW = routing_pb2.DECISION_OUTCOME_AGGREGATE_BELOW_THRESHOLD
COOLDOWN = routing_pb2.DECISION_OUTCOME_COOLDOWN


def _complain(h: Harness, text: str, when: datetime, complaint: str) -> str:
    session = f"s-{text[:12]}-{when.timestamp()}"
    interaction = h.interaction(session, prompt="support-answer", response=ANSWERS[complaint])
    fid = h.feedback(interaction, session, thumb=common_pb2.THUMB_DOWN, comment=text, occurred_at=ts(when))
    h.route_pending()
    return fid


def _decision(h: Harness, feedback_id: str) -> routing_pb2.PolicyDecision:
    [record] = h.routing.Explain(routing_pb2.ExplainRequest(feedback_id=feedback_id)).records
    return record.decision


def _outcomes(h: Harness, feedback_ids: list[str]) -> list[int]:
    return [_decision(h, fid).outcome for fid in feedback_ids]


def _statuses(decision: routing_pb2.PolicyDecision) -> dict[str, int]:
    return {action.type: action.status for action in decision.actions}


def _group_of(response: recall_pb2.TopIssuesResponse, members: list[str]) -> str:
    owners = [i for i in response.issues if set(i.member_ids) & set(members)]
    assert len(owners) == 1, [(i.label, list(i.member_ids)) for i in response.issues]
    return owners[0].group_id


def test_an_aggregate_cools_down_per_lasting_complaint(h: Harness) -> None:
    h.apply(policy_files(**FILES))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=6)

    # No lasting group yet: the first firing cools down the whole group_by value, so the other
    # complaint under the same prompt is held back, as it always was without recall.
    pricing = [_complain(h, t, start + timedelta(minutes=n), "pricing") for n, t in enumerate(PRICING)]
    tone = [_complain(h, t, start + timedelta(hours=1, minutes=n), "tone") for n, t in enumerate(TONE)]
    assert _outcomes(h, pricing) == [BELOW, BELOW, MATCHED, COOLDOWN]
    assert _outcomes(h, tone) == [COOLDOWN] * 3
    held = _decision(h, tone[2])
    assert held.reason == f"in cooldown (12h) for group {GROUP_KEY}", held.reason

    window = common_pb2.TimeRange(start=ts(start - timedelta(days=1)), end=ts(start + timedelta(days=1)))
    top = recall_pb2_grpc.RecallServiceStub(h.channel).TopIssues(
        recall_pb2.TopIssuesRequest(time_range=window)
    )
    pricing_group, tone_group = _group_of(top, pricing), _group_of(top, tone)
    assert pricing_group != tone_group

    # Three days later both complaints return within one cooldown window: each fires once.
    later = start + timedelta(days=3)
    again = [_complain(h, t, later + timedelta(minutes=n), "pricing") for n, t in enumerate(PRICING_LATER)]
    rude = [_complain(h, t, later + timedelta(hours=1, minutes=n), "tone") for n, t in enumerate(TONE)]
    assert _outcomes(h, again) == [BELOW, BELOW, MATCHED]
    assert _outcomes(h, rude) == [BELOW, BELOW, MATCHED], _decision(h, rude[0]).reason
    # Each has its own patch and its own dataset item, not the other complaint's.
    for fired in (again[2], rude[2]):
        statuses = _statuses(_decision(h, fired))
        assert statuses["prompt_patch"] == routing_pb2.ACTION_STATUS_CREATED, statuses
    assert _statuses(_decision(h, rude[2]))["dataset_add"] == routing_pb2.ACTION_STATUS_CREATED

    # The same complaint repeated within its cooldown does not fire again, and says why.
    repeat = _complain(h, PRICING[3], later + timedelta(hours=2), "pricing")
    cooled = _decision(h, repeat)
    assert cooled.outcome == COOLDOWN
    assert cooled.reason == f"in cooldown (12h) for issue group {pricing_group} in group {GROUP_KEY}"
    assert not cooled.actions

    # Past its cooldown it fires again, onto the effects it already has.
    expired = _complain(h, PRICING[0], later + timedelta(hours=13), "pricing")
    assert _outcomes(h, [expired]) == [MATCHED]
    assert _statuses(_decision(h, expired)) == {
        "human_review": routing_pb2.ACTION_STATUS_EXISTING,
        "prompt_patch": routing_pb2.ACTION_STATUS_EXISTING,
        # Keyed on the group too; the group's firing three days ago skipped it as a
        # near-duplicate of the item the first, ungrouped firing added.
        "dataset_add": routing_pb2.ACTION_STATUS_SKIPPED,
    }

    with h.db.read() as session:
        patch_keys = set(session.scalars(select(PromptPatchRow.dedup_key)))
        item_keys = set(session.scalars(select(DatasetItemRow.dedup_key)))
    assert patch_keys == {
        f"cooled#1:group:{GROUP_KEY}",  # the firing before any lasting group existed
        f"cooled#1:issue:{pricing_group}:{GROUP_KEY}",
        f"cooled#1:issue:{tone_group}:{GROUP_KEY}",
    }
    assert item_keys == {f"cooled#2:group:{GROUP_KEY}", f"cooled#2:issue:{tone_group}:{GROUP_KEY}"}

    # A plan's backtest over the later days decides the cooldowns live routing decided.
    now = datetime.now(UTC)
    plan = h.routing.PlanPolicies(
        routing_pb2.PlanPoliciesRequest(
            files=policy_files(**FILES),
            backtest_window={"seconds": int((now - later).total_seconds()) + 3600},
        )
    )
    [backtest] = plan.backtest.policies
    live = _outcomes(h, [*again, *rude, repeat, expired])
    names = {o: routing_pb2.DecisionOutcome.Name(o).removeprefix("DECISION_OUTCOME_").lower() for o in live}
    expected = {names[o]: live.count(o) for o in set(live)}
    assert (
        dict(backtest.outcome_counts)
        == expected
        == {
            "matched": 3,
            "aggregate_below_threshold": 4,
            "cooldown": 1,
        }
    ), plan.plan_text
    counts = {action.type: action.count for action in backtest.actions}
    assert counts == {"human_review": 2, "prompt_patch": 2, "dataset_add": 2}, plan.plan_text
