"""The shipped example policies (policies/) against reviewers' verdicts, as routing sees them.

A resolution re-enters the pipeline as feedback with source `reviewer`. The offline cases in
policies/tests/ show such an event fails the conditions; here an aggregate's count is taken as
the server takes it, by applying the policy's condition to each stored neighbour, so a verdict
among the neighbours is seen not to count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feedbackloop.policy.engine import CompiledPolicySet, Condition, CooldownMemory, Outcome
from feedbackloop.policy.event import make_event
from feedbackloop.policy.model import RoutingPolicy
from feedbackloop.policy.validate import validate_dir

from .conftest import EXAMPLES

INTERACTION = {"prompt_name": "support-answer", "model_version": "2024-05"}


class Neighbours(CooldownMemory):
    """Similar counts as RecallSimilarFeedback makes them: the event, and each neighbour that
    meets the policy's condition."""

    def __init__(self, neighbours: list[dict[str, dict[str, Any]]]) -> None:
        super().__init__()
        self.neighbours = neighbours

    def similar_count(
        self, policy: RoutingPolicy, event: Mapping[str, Any], group_key: str, condition: Condition
    ) -> int:
        return 1 + sum(1 for n in self.neighbours if condition(n))


def complaint(fid: str, source: str = "end_user", origin: str = "") -> dict[str, dict[str, Any]]:
    feedback = {
        "id": fid,
        "thumb": "down",
        "categories": ["outdated_info"],
        "comment": "the price is outdated",
        "source": source,
        "origin_policy": origin,
        "occurred_at": "2024-06-01T10:00:00Z",
    }
    return make_event({"feedback": feedback, "interaction": INTERACTION})


def examples() -> CompiledPolicySet:
    policy_set, errors = validate_dir(EXAMPLES)
    assert policy_set is not None, errors
    return CompiledPolicySet.from_policy_set(policy_set)


def test_outdated_info_aggregate_does_not_count_a_reviewers_verdict() -> None:
    # Four users' complaints besides this one, and a quality reviewer confirming one of them:
    # four similar signals, short of min_count 5, not five.
    neighbours = [complaint(f"fb-user-{i}") for i in range(3)]
    neighbours.append(complaint("fb-verdict", source="reviewer", origin="thumbs-down-comment-review"))
    state = Neighbours(neighbours)
    decisions = examples().evaluate(complaint("fb-user-3"), state=state)
    [outdated] = [d for d in decisions if d.policy == "outdated-info-guideline"]
    assert outdated.outcome == Outcome.AGGREGATE_BELOW_THRESHOLD
    assert outdated.reason.startswith("4 similar signal(s) in 24h, needs 5"), outdated.reason
    # One more user's complaint reaches it: the verdict was the only one left out.
    state.neighbours.append(complaint("fb-user-4"))
    [outdated] = [
        d
        for d in examples().evaluate(complaint("fb-user-3"), state=state)
        if d.policy == "outdated-info-guideline"
    ]
    assert outdated.outcome == Outcome.MATCHED


def test_a_reviewers_reject_with_a_comment_never_reaches_a_review_queue() -> None:
    # A safety reviewer's reject with a comment, on an id that thumbs-down-comment-review's
    # 25% sample takes (fb-5): no policy may put it before another reviewer.
    verdict = make_event(
        {
            "feedback": {
                "id": "fb-5",
                "thumb": "down",
                "comment": "answer leaks an account number",
                "categories": ["outdated_info"],
                "source": "reviewer",
                "origin_policy": "unsafe-to-safety-review",
            },
            "interaction": INTERACTION,
        }
    )
    decisions = examples().evaluate(verdict, state=Neighbours([]))
    assert [a for d in decisions for a in d.actions] == []
    outcomes = {d.policy: d.outcome for d in decisions}
    assert outcomes["thumbs-down-comment-review"] == Outcome.CONDITION_FALSE
    assert outcomes["outdated-info-guideline"] == Outcome.CONDITION_FALSE
