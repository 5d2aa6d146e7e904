"""OTLP attribute values as Python values, and as the strings free attributes hold."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.common.v1 import common_pb2

# Far more than any instrumentation sets on one span or event: beyond it a span is refused
# before its attributes are read (an attribute bomb), so reading stays bounded per span.
MAX_SPAN_ATTRIBUTES = 1024
MAX_SPAN_EVENTS = 1024
# Nesting of array and key-value list values read; deeper values are kept as their JSON.
MAX_VALUE_DEPTH = 8
_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value"})


def value_of(value: common_pb2.AnyValue, depth: int = 0) -> Any:
    """An AnyValue as str, bool, int, float, bytes (base64 text), list or dict; None if unset."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        if depth >= MAX_VALUE_DEPTH:
            return None
        return [value_of(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        if depth >= MAX_VALUE_DEPTH:
            return None
        return {kv.key: value_of(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


def attribute_map(attributes: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    """Key to value; a key repeated keeps its last value, as the SDKs do."""
    out: dict[str, Any] = {}
    for kv in attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        # Scalars, nearly every attribute, are read here: a call per attribute showed in the
        # ingest profile.
        out[kv.key] = getattr(value, kind) if kind in _SCALARS else value_of(value)
    return out


def as_text(value: Any) -> str:
    """A value as the string a free attribute holds: strings as they are, others as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
