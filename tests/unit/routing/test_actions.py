"""Patch template rendering and dataset near-duplicate matching."""

from __future__ import annotations

import pytest

from feedbackloop.routing.actions import patched_template, render
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
