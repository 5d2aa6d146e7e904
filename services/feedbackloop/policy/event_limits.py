"""Hold an event built outside ingestion to the sizes the cost estimate assumes.

A condition's estimated cost (cost.py) bounds its evaluation only on events whose fields are
no larger than EVENT_SHAPES says: ingestion's limits, which every stored event keeps. An event
a caller supplies whole (RoutingService.Evaluate's inline event) has no such limits of its
own: with 2,000 categories, a condition estimated at 10,000 units (two nested `exists` over
`feedback.categories`) ran for 2.6 s holding the GIL, and a request of a few megabytes could
hold it for hours. So such an event is checked against the same shapes before any condition
sees it: every list, map and string within its size, every value of the kind its field has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feedbackloop.policy.cost import EVENT_SHAPES, Shape

# Enough to name what is wrong; an event can hold far more bad values than are worth listing.
MAX_PROBLEMS = 16
_KIND_WORDS = {"string": "a string", "list": "a list", "map": "a map", "scalar": "a number, a bool or null"}


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        return "list"
    return "scalar"


def _wanted(shape: Shape) -> str:
    return shape.kind if shape.kind in ("string", "list", "map") else "scalar"


def event_problems(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(path, reason) for each value of `event` that is larger than, or of another kind than,
    the estimate assumes; empty when every condition's estimate holds on it."""
    problems: list[tuple[str, str]] = []
    for section, shape in EVENT_SHAPES.items():
        _check(event.get(section, {}), shape, section, problems)
    return problems[:MAX_PROBLEMS]


def _check(value: Any, shape: Shape, path: str, out: list[tuple[str, str]]) -> None:
    if len(out) >= MAX_PROBLEMS:
        return
    wanted, got = _wanted(shape), _kind(value)
    if got != wanted:
        out.append((path, f"must be {_KIND_WORDS[wanted]}"))
        return
    if wanted == "string":
        if len(value) > shape.size:
            out.append((path, f"is {len(value)} characters long; the limit is {shape.size}"))
    elif wanted == "list":
        if len(value) > shape.size:
            out.append((path, f"has {len(value)} entries; the limit is {shape.size}"))
            return
        assert shape.elem is not None
        for i, item in enumerate(value):
            _check(item, shape.elem, f"{path}[{i}]", out)
    elif wanted == "map":
        _check_map(value, shape, path, out)


def _check_map(value: Mapping[Any, Any], shape: Shape, path: str, out: list[tuple[str, str]]) -> None:
    if shape.fields is not None:  # a record: known keys, each with its own shape
        for key, item in value.items():
            field_shape = shape.fields.get(key) if isinstance(key, str) else None
            if field_shape is None:
                out.append((path, f"has a field that events do not have ({str(key)[:64]!r})"))
                return
            _check(item, field_shape, f"{path}.{key}", out)
        return
    if len(value) > shape.size:
        out.append((path, f"has {len(value)} entries; the limit is {shape.size}"))
        return
    assert shape.key is not None and shape.elem is not None
    for key, item in value.items():
        if isinstance(key, str) and len(key) > shape.key.size:
            out.append((path, f"has a key {len(key)} characters long; the limit is {shape.key.size}"))
            return
        _check(item, shape.elem, f"{path}[{str(key)[:64]!r}]", out)
