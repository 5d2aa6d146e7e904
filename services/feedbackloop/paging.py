"""Keyset pages for every list RPC (feedback, revisions, patches, review items).

A page ends at a row; the next starts strictly after that row in the list's order, so rows
added or leaving the list between calls (a review item claimed and resolved, a new patch)
never shift the pages the way an offset would. The token carries the last row's sort values
and a digest of the request's filter: a token replayed with another filter is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from feedbackloop.errors import InvalidArgument

MAX_TOKEN_CHARS = 2048  # a real token carries a few sort values and a digest
INT64 = range(-(2**63), 2**63)
MALFORMED = "is malformed; pass next_page_token unchanged"


@dataclass(frozen=True)
class SortKey:
    """One column of a list's order; the last key must be unique (the row id)."""

    column: InstrumentedAttribute[Any]
    descending: bool = False

    @property
    def name(self) -> str:
        return self.column.key


def filter_digest(request: Message) -> str:
    """Digest of a request's filter: every field but the page size and token."""
    filtered = type(request)()
    filtered.CopyFrom(request)
    for name in ("page_size", "page_token"):
        if name in filtered.DESCRIPTOR.fields_by_name:
            filtered.ClearField(name)
    return hashlib.sha256(filtered.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode(values: Sequence[Any], digest: str) -> str:
    """A token for the row with these sort values (datetimes must be aware; sent as UTC)."""

    def plain(value: Any) -> Any:
        return {"dt": value.astimezone(UTC).isoformat()} if isinstance(value, datetime) else value

    payload = {"k": [plain(v) for v in values], "f": digest}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(token: str, digest: str, width: int) -> list[Any]:
    """The sort values `width` keys long that `token` carries; refused unless made for `digest`."""

    def typed(value: Any) -> Any:
        if isinstance(value, dict):
            when = datetime.fromisoformat(value["dt"])
            if when.tzinfo is None:
                raise ValueError("naive time")
            return when
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("unexpected value type")
        # The store compares these with its columns: a value no column can hold (an int past
        # 64 bits, a NUL in text) would fail there, as an internal error.
        if isinstance(value, int) and value not in INT64:
            raise ValueError("integer out of range")
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("NUL in a string")
        return value

    malformed = InvalidArgument.single("page_token", MALFORMED)
    if len(token) > MAX_TOKEN_CHARS:
        raise malformed
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        token_digest, raw = payload["f"], payload["k"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise malformed from None
    if not isinstance(token_digest, str) or not isinstance(raw, list):
        raise malformed
    if token_digest != digest:  # also a token of another list: its filter differs too
        raise InvalidArgument.single("page_token", "was issued for a different filter")
    try:
        values = [typed(v) for v in raw]
    except (ValueError, KeyError, TypeError):
        raise malformed from None
    if len(values) != width:
        raise malformed
    return values


def _after(keys: Sequence[SortKey], values: Sequence[Any]) -> Any:
    """Rows strictly after `values` in the order of `keys`:
    k1 beyond v1, or k1 = v1 and k2 beyond v2, and so on."""
    alternatives = []
    for i, key in enumerate(keys):
        beyond = key.column < values[i] if key.descending else key.column > values[i]
        alternatives.append(and_(*(keys[j].column == values[j] for j in range(i)), beyond))
    return or_(*alternatives)


def _fits(key: SortKey, value: Any) -> bool:
    """Whether a token's value has its sort column's type (a forged token may mix them up)."""
    column_type = key.column.type
    try:  # a TypeDecorator (UtcDateTime) says `object`; the type it wraps knows
        expected = getattr(column_type, "impl", column_type).python_type
    except NotImplementedError:  # a type that does not say: let the store compare
        return True
    if expected is datetime or isinstance(value, datetime):
        return isinstance(value, datetime) and expected is datetime
    return isinstance(value, expected)


def page(
    session: Session,
    stmt: Select[Any],
    keys: Sequence[SortKey],
    *,
    size: int,
    token: str,
    digest: str,
) -> tuple[list[Any], str]:
    """One page of `stmt` in the order of `keys`, and the token of the next page ("" if last)."""
    if token:
        values = decode(token, digest, len(keys))
        if not all(_fits(key, value) for key, value in zip(keys, values, strict=True)):
            raise InvalidArgument.single("page_token", MALFORMED)
        stmt = stmt.where(_after(keys, values))
    order = [key.column.desc() if key.descending else key.column for key in keys]
    rows: list[Any] = list(session.scalars(stmt.order_by(*order).limit(size + 1)))
    if len(rows) <= size:
        return rows, ""
    last = rows[size - 1]
    return rows[:size], encode([getattr(last, key.name) for key in keys], digest)
