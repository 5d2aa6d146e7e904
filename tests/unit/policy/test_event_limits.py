"""event_limits: an event built outside ingestion is held to the sizes the cost estimate assumes."""

from __future__ import annotations

from typing import Any

import pytest

from feedbackloop.policy.cost import EVENT_SHAPES, Shape
from feedbackloop.policy.event import make_event, sample_event
from feedbackloop.policy.event_limits import MAX_PROBLEMS, event_problems


def at_limits(shape: Shape) -> Any:
    """A value as large as `shape` allows: every string, list and map full."""
    if shape.kind == "string":
        return "é" * shape.size
    if shape.fields is not None:
        return {name: at_limits(field) for name, field in shape.fields.items()}
    if shape.kind in ("list", "map"):
        assert shape.elem is not None
        item = at_limits(shape.elem)
        if shape.kind == "list":
            return [item] * shape.size
        assert shape.key is not None
        return {f"{i:0{shape.key.size}d}": item for i in range(shape.size)}
    return 0


def test_an_event_at_every_limit_and_the_sample_pass() -> None:
    assert event_problems({section: at_limits(shape) for section, shape in EVENT_SHAPES.items()}) == []
    assert event_problems(sample_event()) == []
    assert event_problems(make_event()) == []


@pytest.mark.parametrize(
    ("partial", "problem"),
    [
        (
            {"feedback": {"categories": ["c"] * 17}},
            ("feedback.categories", "has 17 entries; the limit is 16"),
        ),
        (
            {"feedback": {"categories": ["c" * 129]}},
            ("feedback.categories[0]", "is 129 characters long; the limit is 128"),
        ),
        (
            {"feedback": {"comment": "x" * 32_001}},
            ("feedback.comment", "is 32001 characters long; the limit is 32000"),
        ),
        ({"feedback": {"comment": ["x"]}}, ("feedback.comment", "must be a string")),
        ({"feedback": {"rating": "5"}}, ("feedback.rating", "must be a number, a bool or null")),
        ({"feedback": {"categories": None}}, ("feedback.categories", "must be a list")),
        (
            {"feedback": {"attributes": {f"k{i}": "v" for i in range(65)}}},
            ("feedback.attributes", "has 65 entries; the limit is 64"),
        ),
        (
            {"feedback": {"attributes": {"k" * 129: "v"}}},
            ("feedback.attributes", "has a key 129 characters long; the limit is 128"),
        ),
        (
            {"feedback": {"attributes": {"k": {"nested": "v"}}}},
            ("feedback.attributes['k']", "must be a string"),
        ),
        (
            {"interaction": {"input_messages": [{"role": "user", "content": "hi"}] * 513}},
            ("interaction.input_messages", "has 513 entries; the limit is 512"),
        ),
        (
            {"interaction": {"context_documents": [{"id": "d", "text": "t", "score": 0.5, "big": "x"}]}},
            ("interaction.context_documents[0]", "has a field that events do not have ('big')"),
        ),
        ({"session": {"id": "s" * 129}}, ("session.id", "is 129 characters long; the limit is 128")),
    ],
)
def test_values_past_the_assumed_sizes_are_named(partial: dict[str, Any], problem: tuple[str, str]) -> None:
    assert event_problems(make_event(partial)) == [problem]


def test_a_hostile_event_is_reported_in_part() -> None:
    event = make_event(
        {"feedback": {"categories": ["c" * 200] * 16}, "interaction": {"response": "x" * 40_000}}
    )
    event["feedback"]["categories"] = [["nested"]] * 10 + ["c" * 200] * 6
    problems = event_problems(event)
    assert len(problems) == MAX_PROBLEMS
    assert problems[0] == ("feedback.categories[0]", "must be a string")
