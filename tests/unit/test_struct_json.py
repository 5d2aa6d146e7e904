"""`fields.struct_json` reads a Struct as `json_format.MessageToDict` does, and refuses what JSON
in a store cannot hold, naming each path."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from feedbackloop import fields
from feedbackloop.errors import Violations


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.choice(["str", "num", "bool", "null"] + (["list", "dict"] if depth < 4 else []))
    if kind == "str":
        return rng.choice(["", "a", "stop", "é ✓", "line\nbreak"])
    if kind == "num":
        return rng.choice([0, 1, -2.5, 0.2, 1e300, 2**53])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{i}": _value(rng, depth + 1) for i in range(rng.randrange(4))}


@pytest.mark.parametrize("seed", range(200))
def test_random_structs_read_as_message_to_dict(seed: int) -> None:
    rng = random.Random(seed)
    struct = struct_pb2.Struct()
    struct.update({f"p{i}": _value(rng, 0) for i in range(rng.randrange(6))})
    v = Violations()
    assert fields.struct_json(v, "m", struct) == json_format.MessageToDict(struct)
    assert not v


def _paths(v: Violations) -> list[tuple[str, str]]:
    return [(x.field, x.description) for x in v.items]


def test_every_nul_is_named_by_its_path_and_non_finite_numbers_once() -> None:
    struct = struct_pb2.Struct()
    struct.update(
        {
            "stop": ["ok", "\x00"],
            "nested": {"a\x00": 1, "deep": {"s": "x\x00y"}},
            "t": math.nan,
            "u": [math.inf],
        }
    )
    v = Violations()
    assert fields.struct_json(v, "interaction.model.parameters", struct) == {}
    found = _paths(v)
    # Struct maps iterate in no defined order: the NULs in any order, the numbers last.
    assert found[-1] == ("interaction.model.parameters", "numbers must be finite (no NaN or infinity)")
    assert sorted(found[:-1]) == sorted(
        [
            (
                "interaction.model.parameters.fields['stop'].list_value.values[1].string_value",
                "must not contain NUL characters (U+0000)",
            ),
            (
                "interaction.model.parameters.fields['nested'].struct_value.fields['a\\x00']",
                "must not contain NUL characters (U+0000)",
            ),
            (
                "interaction.model.parameters.fields['nested'].struct_value.fields['deep'].struct_value.fields['s'].string_value",
                "must not contain NUL characters (U+0000)",
            ),
        ]
    )
