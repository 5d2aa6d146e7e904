"""Checks for the fields requests share: ids and names, free text, integer labels, timestamps.

Every servicer checks its request fields with these before anything reaches the store, so a
value the store, the index or the wire cannot carry is refused as the caller's error (naming the
field) instead of failing deep down as an INTERNAL one: PostgreSQL text cannot hold NUL, a
Milvus filter literal cannot hold control characters, SQL integers and Python datetimes have
ranges that protobuf's ints and Timestamps exceed.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from feedbackloop.errors import InvalidArgument, Violations

MAX_ID_CHARS = 128
MAX_NAME_CHARS = 128
MAX_KEY_CHARS = 256
INT32_MAX = 2**31 - 1

# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799
# google.protobuf.Duration's documented range: about +-10,000 years.
DURATION_MAX_SECONDS = 315_576_000_000
TIMESTAMP_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z"
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Unicode's control characters (category Cc) are exactly these 65 code points; a regular
# expression finds them at C speed (ids and attribute keys are checked on every ingested record).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def first_control(value: str) -> tuple[int, str] | None:
    """The first control character of `value` as (position, U+XXXX), if any."""
    match = _CONTROL.search(value)
    if match is None:
        return None
    return match.start(), f"U+{ord(match.group()):04X}"


def identifier(
    v: Violations, path: str, value: str, *, required: bool = False, limit: int = MAX_ID_CHARS
) -> str:
    """An id or a name: at most `limit` characters, no control characters, not blank if required."""
    if not value.strip():
        if required:
            v.add(path, "is required")
        elif value:
            v.add(path, "must not be blank")
        return value
    if len(value) > limit:
        v.add(path, f"is {len(value)} characters long; the limit is {limit}")
        return value
    bad = first_control(value)
    if bad is not None:
        v.add(path, f"must not contain control characters ({bad[1]} at position {bad[0]})")
    return value


def text(v: Violations, path: str, value: str, limit: int, *, required: bool = False) -> str:
    """Free text: at most `limit` characters and no NUL (line breaks and tabs are fine)."""
    if required and not value.strip():
        v.add(path, "is required")
    if len(value) > limit:
        v.add(path, f"is {len(value)} characters long; the limit is {limit}")
    elif "\x00" in value:
        v.add(path, f"must not contain NUL characters (U+0000 at position {value.index(chr(0))})")
    return value


def require_id(path: str, value: str, *, limit: int = MAX_ID_CHARS) -> str:
    """`identifier` for a request whose only field to check is this one: raises at once."""
    v = Violations()
    identifier(v, path, value, required=True, limit=limit)
    v.raise_if_any()
    return value


def optional_id(path: str, value: str, *, limit: int = MAX_ID_CHARS) -> str:
    v = Violations()
    identifier(v, path, value, limit=limit)
    v.raise_if_any()
    return value


def decimal_label(value: str, *, maximum: int = INT32_MAX) -> int | None:
    """The number a decimal label such as a version ("3") names, 1 to `maximum`; None when it is
    not one. ASCII digits only: `str.isdigit` also accepts "²", which `int` refuses."""
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(maximum)):
        return None
    number = int(value)
    return number if 0 < number <= maximum else None


def timestamp(v: Violations, path: str, message: timestamp_pb2.Timestamp) -> datetime | None:
    """An aware UTC datetime, or None (and a violation) outside protobuf's Timestamp range."""
    if not TIMESTAMP_MIN_SECONDS <= message.seconds <= TIMESTAMP_MAX_SECONDS:
        v.add(path, f"is outside the Timestamp range {TIMESTAMP_RANGE} (seconds={message.seconds})")
        return None
    if not 0 <= message.nanos <= 999_999_999:
        v.add(path, f"nanos must be between 0 and 999999999 (got {message.nanos})")
        return None
    # What Timestamp.ToDatetime(tzinfo=UTC) gives, without its second range check and time
    # zone conversion: every ingested record has a timestamp (1.1 to 0.8 µs each).
    return _EPOCH + timedelta(seconds=message.seconds, microseconds=message.nanos // 1_000)


def duration(v: Violations, path: str, message: duration_pb2.Duration) -> timedelta | None:
    """A timedelta, or None (and a violation) outside protobuf's Duration range."""
    if not -DURATION_MAX_SECONDS <= message.seconds <= DURATION_MAX_SECONDS:
        v.add(path, f"is outside the Duration range of +-{DURATION_MAX_SECONDS}s (seconds={message.seconds})")
        return None
    if not -999_999_999 <= message.nanos <= 999_999_999 or (
        message.seconds and message.nanos and (message.seconds < 0) != (message.nanos < 0)
    ):
        v.add(
            path,
            f"nanos must be between -999999999 and 999999999 with the sign of seconds (got {message.nanos})",
        )
        return None
    return message.ToTimedelta()


def previous_window(path: str, start: datetime, end: datetime) -> datetime:
    """The start of the window of the same length just before [start, end)."""
    length = end - start
    if start - EARLIEST < length:
        raise InvalidArgument.single(
            path,
            f"the previous window of the same length would start before {EARLIEST.date().isoformat()}; "
            "use a shorter or later window",
        )
    return start - length


def struct_json(v: Violations, path: str, struct: struct_pb2.Struct) -> dict[str, Any]:
    """A google.protobuf.Struct as the JSON values `json_format.MessageToDict` gives, read in one
    walk (three walks of every model's parameters showed in the ingest profile). What JSON in a
    store cannot hold is refused: each key or string with a NUL, by its path, then any NaN or
    infinity once for the whole Struct (which then reads as {})."""
    nul: list[str] = []
    finite = [True]
    out = _struct_json(struct, path, nul, finite)
    for item in nul:
        v.add(item, "must not contain NUL characters (U+0000)")
    if not finite[0]:
        v.add(path, "numbers must be finite (no NaN or infinity)")
        return {}
    return out


def _struct_json(struct: struct_pb2.Struct, path: str, nul: list[str], finite: list[bool]) -> dict[str, Any]:
    out = {}
    fields = struct.fields
    for key in fields:
        item_path = f"{path}.fields[{key!r}]"
        if "\x00" in key:
            nul.append(item_path)
        out[key] = _value_json(fields[key], item_path, nul, finite)
    return out


def _value_json(value: struct_pb2.Value, path: str, nul: list[str], finite: list[bool]) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        text = value.string_value
        if "\x00" in text:
            nul.append(f"{path}.string_value")
        return text
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            finite[0] = False
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _struct_json(value.struct_value, f"{path}.struct_value", nul, finite)
    if kind == "list_value":
        return [
            _value_json(item, f"{path}.list_value.values[{i}]", nul, finite)
            for i, item in enumerate(value.list_value.values)
        ]
    return None  # null_value, or no kind set
