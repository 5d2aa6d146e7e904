"""Patch template rendering, dataset near-duplicate matching and review item keys."""

from __future__ import annotations

import pytest

from feedbackloop.policy.model import Aggregate, HumanReview, RoutingPolicy
from feedbackloop.routing.actions import issue_group_of, patched_template, render, review_key
from feedbackloop.routing.similarity import best_match


def test_render_fills_known_placeholders_and_keeps_unknown_ones() -> None:
    assert render(
        "Avoid {{ summary }} in {{prompt_name}}; {{nope}}", {"summary": "old prices", "prompt_name": "p"}
    ) == ("Avoid old prices in p; {{nope}}")


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("append_guideline", "Base.\n\nRule.\n"), ("add_example", "Base.\n\nRule.\n"), ("generator", "Rule.")],
)
def test_patched_template(strategy: str, expected: str) -> None:
    assert patched_template("Base.\n", strategy, "Rule.") == expected


def test_best_match_uses_vectors_and_falls_back_to_exact_text() -> None:
    existing = [("a", [1.0, 0.0], "q\nx"), ("b", [0.6, 0.8], "q\ny")]
    assert best_match([0.6, 0.8], "other", existing) == ("b", pytest.approx(1.0))
    assert best_match(None, "Q\n  x", [("a", None, "q\nx")]) == ("a", 1.0)
    assert best_match(None, "z", existing) == ("", 0.0)


def test_review_keys_name_the_feedback_the_lasting_group_or_the_firing() -> None:
    review = (HumanReview(queue="q"),)
    per_event = RoutingPolicy(name="down", when="true", actions=review)
    aggregate = RoutingPolicy(
        name="many", when="true", actions=review, aggregate=Aggregate(min_count=3, window="1h")
    )
    # A group_by value may hold anything, colons included: the group id is read from the front.
    group_key = "interaction.prompt_name=a:b,feedback.user_role=x"
    assert review_key(per_event, "fb_1", "", "ig_9") == "fb:fb_1"
    grouped = review_key(aggregate, "fb_1", group_key, "ig_9")
    assert grouped == f"issue:ig_9:many:{group_key}" and issue_group_of(grouped) == "ig_9"
    # Another feedback of the same lasting group: the same item.
    assert review_key(aggregate, "fb_2", group_key, "ig_9") == grouped
    ungrouped = review_key(aggregate, "fb_1", group_key, "")
    assert ungrouped == f"fired:fb_1:many:{group_key}" and issue_group_of(ungrouped) == ""
    assert issue_group_of("fb:fb_1") == "" and issue_group_of(f"group:many:{group_key}") == ""
