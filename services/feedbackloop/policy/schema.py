"""JSON Schema validation of policy documents, with messages written for policy authors.

The schema file inside this package is the one source of truth: the validator loads it from
the installed package (so a wheel needs nothing else), and `policies/schema/` holds a
byte-identical copy for editors (`# yaml-language-server: $schema=...`), kept in sync by a
unit test rather than a generator so there is no build step to forget.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from feedbackloop.policy.durations import DURATION_PATTERN

SCHEMA_FILENAME = "feedbackloop-v1.schema.json"
API_VERSION = "feedbackloop/v1"
KINDS: tuple[str, ...] = ("FeedbackSchema", "Prompt", "Dataset", "ReviewQueue", "RoutingPolicy")

Path_ = tuple[str | int, ...]


def schema_text() -> str:
    """The canonical schema file's exact text (used by the sync test and for publishing)."""
    return resources.files("feedbackloop.policy").joinpath(SCHEMA_FILENAME).read_text(encoding="utf-8")


@cache
def load_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text())
    return schema


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
}


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _messages(err: jsonschema.ValidationError) -> Iterator[tuple[Path_, str, bool]]:
    """Translate one jsonschema error into (path, message, point_at_key) triples."""
    path: Path_ = tuple(err.absolute_path)
    # jsonschema types these as unions with an "Unset" sentinel; for a raised error they are set.
    v: Any = err.validator
    inst: Any = err.instance
    schema: Any = err.schema
    expected: Any = err.validator_value
    if v == "additionalProperties" and isinstance(inst, dict) and isinstance(schema, dict):
        known = list(schema.get("properties", {}))
        for key in inst:
            if key not in known:
                hint = f" (expected one of: {', '.join(known)})" if known else ""
                yield (*path, key), f'unknown field "{key}"{hint}', True
        return
    if v == "required" and isinstance(inst, dict):
        for name in expected:
            if name not in inst:
                yield path, f'missing required field "{name}"', False
        return
    if v in ("minProperties", "maxProperties") and path and "prompt_patch" in schema.get("properties", {}):
        keys = ", ".join(inst) if isinstance(inst, dict) else ""
        yield (
            path,
            f"an action must have exactly one key (prompt_patch, dataset_add or human_review), got: {keys}",
            False,
        )
        return
    if v == "enum":
        options = ", ".join(str(o) for o in expected)
        if path == ("kind",):
            yield path, f"unknown kind {_json(inst)} (expected one of: {options})", False
        elif "propertyNames" in [str(p) for p in err.relative_schema_path]:
            yield (*path, str(inst)), f"unknown key {_json(inst)} (expected one of: {options})", True
        else:
            yield path, f"{_json(inst)} is not one of: {options}", False
        return
    if v == "const":
        if path == ("apiVersion",):
            yield path, f"unsupported apiVersion {_json(inst)} (expected {_json(API_VERSION)})", False
        else:
            yield path, f"must be {_json(expected)}", False
        return
    if v == "type":
        words = [_TYPE_WORDS.get(t, t) for t in ([expected] if isinstance(expected, str) else expected)]
        yield path, f"must be {' or '.join(words)}, got {_type_of(inst)}", False
        return
    if v == "pattern":
        if expected == DURATION_PATTERN:
            msg = f'invalid duration {_json(inst)}: use a number and a unit, e.g. "30s", "15m", "24h", "7d"'
        elif path and path[-1] in ("name", "prompt", "dataset", "queue"):
            msg = (
                f'invalid name {_json(inst)}: use lower-case letters, digits and "-" (at most 63 characters)'
            )
        elif len(path) >= 2 and path[-2] == "group_by":
            msg = f"invalid field path {_json(inst)}: use feedback.<field>, interaction.<field> or session.<field>"
        elif path and path[-1] == "target":
            msg = f'invalid target {_json(inst)}: use "host:port"'
        else:
            msg = f"{_json(inst)} does not match {expected}"
        yield path, msg, False
        return
    bounds = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
    }
    if v in bounds:
        yield path, f"must be {bounds[v]} {expected}, got {_json(inst)}", False
        return
    if v == "minItems":
        yield path, f"must have at least {expected} item(s)", False
        return
    if v == "uniqueItems":
        yield path, "must not contain duplicates", False
        return
    if v == "minLength":
        yield path, "must not be empty", False
        return
    yield path, err.message, False


def validate_document(data: Any) -> list[tuple[Path_, str, bool]]:
    """All schema problems of one document as (path, message, point_at_key), in path order."""
    out: list[tuple[Path_, str, bool]] = []
    for err in _validator().iter_errors(data):
        out.extend(_messages(err))
    # Deduplicate (an if/then branch can repeat a parent's complaint) and keep a stable order.
    unique = {(p, m): k for p, m, k in out}
    return [(p, m, k) for (p, m), k in sorted(unique.items(), key=lambda item: (str(item[0][0]), item[0][1]))]
