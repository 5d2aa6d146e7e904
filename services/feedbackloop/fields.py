"""Checks for the fields requests share: ids and names, free text, integer labels, timestamps.

Every servicer checks its request fields with these before anything reaches the store, so a
value the store, the index or the wire cannot carry is refused as the caller's error (naming the
field) instead of failing deep down as an INTERNAL one: PostgreSQL text cannot hold NUL, a
Milvus filter literal cannot hold control characters, SQL integers and Python datetimes have
ranges that protobuf's ints and Timestamps exceed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

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
    return message.ToDatetime(tzinfo=UTC)


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


def nul_paths(message: Message, prefix: str) -> Iterator[str]:
    """Paths of every string in `message` (nested messages, lists, map keys and values, Struct
    contents) that holds a NUL, which no store can keep."""
    for descriptor, value in message.ListFields():
        path = f"{prefix}.{descriptor.name}" if prefix else descriptor.name
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            value_field = descriptor.message_type.fields_by_name["value"]
            for key, item in value.items():
                item_path = f"{path}[{key!r}]"
                if isinstance(key, str) and "\x00" in key:
                    yield item_path
                if value_field.message_type is not None:
                    yield from nul_paths(item, item_path)
                elif isinstance(item, str) and "\x00" in item:
                    yield item_path
        elif descriptor.is_repeated:
            for i, item in enumerate(value):
                if isinstance(item, Message):
                    yield from nul_paths(item, f"{path}[{i}]")
                elif isinstance(item, str) and "\x00" in item:
                    yield f"{path}[{i}]"
        elif isinstance(value, Message):
            yield from nul_paths(value, path)
        elif isinstance(value, str) and "\x00" in value:
            yield path


def refuse_nul(v: Violations, message: Message, prefix: str) -> None:
    for path in nul_paths(message, prefix):
        v.add(path, "must not contain NUL characters (U+0000)")


def struct_numbers(message: Message) -> Iterator[float]:
    """Every number in a google.protobuf.Struct (or Value / ListValue), however deep."""
    for descriptor, value in message.ListFields():
        if descriptor.name == "number_value":
            yield value
        elif descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            for item in value.values():
                yield from struct_numbers(item)
        elif descriptor.is_repeated:
            for item in value:
                if isinstance(item, Message):
                    yield from struct_numbers(item)
        elif isinstance(value, Message):
            yield from struct_numbers(value)
