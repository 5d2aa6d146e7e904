"""Opaque page tokens for keyset pagination.

A token carries the last row's (occurred_at, id) and a digest of the filter it was made for,
so a token replayed with another filter is refused instead of silently skipping rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime

from google.protobuf.message import Message

from feedbackloop.errors import InvalidArgument


def filter_digest(filter_message: Message) -> str:
    return hashlib.sha256(filter_message.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode(occurred_at: datetime, row_id: str, digest: str) -> str:
    payload = {"t": occurred_at.astimezone(UTC).isoformat(), "i": row_id, "f": digest}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(token: str, digest: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        when = datetime.fromisoformat(payload["t"])
        row_id = payload["i"]
        token_digest = payload["f"]
        if not isinstance(row_id, str) or not isinstance(token_digest, str) or when.tzinfo is None:
            raise ValueError("bad field types")
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument.single("page_token", "is malformed; pass next_page_token unchanged") from None
    if token_digest != digest:
        raise InvalidArgument.single("page_token", "was issued for a different filter")
    return when, row_id
