from __future__ import annotations

import json

from feedbackloop.policy.differ import diff_policy_sets
from feedbackloop.policy.model import DatasetAdd, HumanReview, PolicySet, ReviewQueue, RoutingPolicy
from feedbackloop.policy.renderer import render_json, render_text

Q = ReviewQueue("quality", sla="24h")
OLD = RoutingPolicy("route", 'feedback.thumb == "down"', (HumanReview("quality", 10),))
NEW = RoutingPolicy("route", 'feedback.thumb == "up"', (HumanReview("quality", 10),), cooldown="1h")
EXTRA = RoutingPolicy("extra", "true", (DatasetAdd("d"),), sample=0.5)


def test_update_only_plan_shows_only_the_update_symbol() -> None:
    text = render_text(diff_policy_sets(PolicySet((Q, OLD)), PolicySet((Q, NEW))))
    assert text == (
        "Resource actions are indicated with the following symbols:\n"
        "  ~ update in-place\n"
        "\n"
        "feedbackloop will perform the following actions:\n"
        "\n"
        "  # RoutingPolicy/route will be updated in-place\n"
        "  ~ RoutingPolicy/route\n"
        '      ~ spec.when: "feedback.thumb == \\"down\\"" -> "feedback.thumb == \\"up\\""\n'
        '      + spec.cooldown: "1h"\n'
        "\n"
        "Plan: 0 to add, 1 to change, 0 to destroy.\n"
    )


def test_create_and_destroy_plan() -> None:
    text = render_text(diff_policy_sets(PolicySet((Q, OLD)), PolicySet((EXTRA,))))
    assert text == (
        "Resource actions are indicated with the following symbols:\n"
        "  + create\n"
        "  - destroy\n"
        "\n"
        "feedbackloop will perform the following actions:\n"
        "\n"
        "  # ReviewQueue/quality will be destroyed\n"
        "  - ReviewQueue/quality\n"
        '      - spec.sla: "24h"\n'
        '      - spec.lease: "15m"\n'
        "      - spec.reviews_required: 1\n"
        "\n"
        "  # RoutingPolicy/extra will be created\n"
        "  + RoutingPolicy/extra\n"
        '      + spec.when: "true"\n'
        '      + spec.actions[0].dataset_add.dataset: "d"\n'
        "      + spec.sample: 0.5\n"
        "      + spec.priority: 0\n"
        "      + spec.continue: false\n"
        "\n"
        "  # RoutingPolicy/route will be destroyed\n"
        "  - RoutingPolicy/route\n"
        '      - spec.when: "feedback.thumb == \\"down\\""\n'
        '      - spec.actions[0].human_review.queue: "quality"\n'
        "      - spec.actions[0].human_review.priority: 10\n"
        "      - spec.sample: 1.0\n"
        "      - spec.priority: 0\n"
        "      - spec.continue: false\n"
        "\n"
        "Plan: 1 to add, 0 to change, 2 to destroy.\n"
    )


def test_no_changes() -> None:
    text = render_text(diff_policy_sets(PolicySet((Q,)), PolicySet((Q,))))
    assert text == "No changes. The live policy set matches the configuration.\n"


def test_json_plan_has_format_version_and_omits_absent_sides() -> None:
    data = json.loads(render_json(diff_policy_sets(PolicySet((Q, OLD)), PolicySet((Q, NEW)))))
    assert data["format_version"] == "1.0"
    assert data["summary"] == {"add": 0, "change": 1, "destroy": 0}
    assert data["has_changes"] is True
    route = data["resource_changes"][1]
    assert route["address"] == "RoutingPolicy/route" and route["action"] == "update"
    assert route["changes"] == [
        {"path": "spec.when", "before": 'feedback.thumb == "down"', "after": 'feedback.thumb == "up"'},
        {"path": "spec.cooldown", "after": "1h"},
    ]
    assert data["resource_changes"][0]["action"] == "no-op"
