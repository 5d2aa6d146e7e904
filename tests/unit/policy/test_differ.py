from __future__ import annotations

from feedbackloop.policy.differ import ABSENT, FieldChange, Transition, diff_policy_sets, flatten
from feedbackloop.policy.model import DatasetAdd, HumanReview, PolicySet, ReviewQueue, RoutingPolicy

Q = ReviewQueue("quality", sla="24h")
OLD_POLICY = RoutingPolicy("route", 'feedback.thumb == "down"', (HumanReview("quality", 10),), sample=0.5)
NEW_POLICY = RoutingPolicy(
    "route",
    'feedback.thumb == "down" && feedback.comment != ""',
    (HumanReview("quality", 20),),
    cooldown="1h",
)


def test_flatten_indexes_lists_of_mappings_and_keeps_scalar_lists_whole() -> None:
    assert flatten({"spec": {"formats": ["a", "b"], "actions": [{"x": {"y": 1}}], "empty": {}}}) == {
        "spec.formats": ["a", "b"],
        "spec.actions[0].x.y": 1,
        "spec.empty": {},
    }


def test_update_lists_each_changed_field() -> None:
    plan = diff_policy_sets(PolicySet((Q, OLD_POLICY)), PolicySet((Q, NEW_POLICY)))
    assert [(r.address, r.transition) for r in plan.resources] == [
        ("ReviewQueue/quality", Transition.NO_OP),
        ("RoutingPolicy/route", Transition.UPDATE),
    ]
    assert plan.resources[1].changes == (
        FieldChange(
            "spec.when", 'feedback.thumb == "down"', 'feedback.thumb == "down" && feedback.comment != ""'
        ),
        FieldChange("spec.actions[0].human_review.priority", 10, 20),
        FieldChange("spec.sample", 0.5, 1.0),
        FieldChange("spec.cooldown", ABSENT, "1h"),
    )
    assert (plan.count(Transition.CREATE), plan.count(Transition.UPDATE), plan.count(Transition.DELETE)) == (
        0,
        1,
        0,
    )


def test_create_and_delete_and_first_apply() -> None:
    other = RoutingPolicy("other", "true", (DatasetAdd("d"),))
    plan = diff_policy_sets(PolicySet((Q, OLD_POLICY)), PolicySet((Q, other)))
    assert [(r.address, r.transition) for r in plan.resources] == [
        ("ReviewQueue/quality", Transition.NO_OP),
        ("RoutingPolicy/other", Transition.CREATE),
        ("RoutingPolicy/route", Transition.DELETE),
    ]
    assert all(c.old is ABSENT for c in plan.resources[1].changes)
    assert all(c.new is ABSENT for c in plan.resources[2].changes)
    first = diff_policy_sets(None, PolicySet((Q,)))
    assert [r.transition for r in first.resources] == [Transition.CREATE]
    assert first.resources[0].changes == (
        FieldChange("spec.sla", ABSENT, "24h"),
        FieldChange("spec.lease", ABSENT, "15m"),
        FieldChange("spec.reviews_required", ABSENT, 1),
    )


def test_identical_sets_have_no_changes() -> None:
    plan = diff_policy_sets(PolicySet((Q, OLD_POLICY)), PolicySet((OLD_POLICY, Q)))
    assert not plan.has_changes


def test_label_changes_are_updates() -> None:
    labelled = ReviewQueue("quality", sla="24h", labels=(("team", "support"),))
    plan = diff_policy_sets(PolicySet((Q,)), PolicySet((labelled,)))
    assert plan.resources[0].changes == (FieldChange("metadata.labels.team", ABSENT, "support"),)
