"""page_token.py: tokens round-trip, carry their filter, and refuse tampering."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from feedbackloop.errors import InvalidArgument
from feedbackloop.ingestion import page_token
from feedbackloop.v1 import common_pb2 as S

MALFORMED = "page_token: is malformed; pass next_page_token unchanged"
WHEN = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def raw_token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def test_round_trip() -> None:
    digest = page_token.filter_digest(S.FeedbackFilter(signals=[S.SIGNAL_THUMBS_DOWN]))
    token = page_token.encode(WHEN, "fb_abc", digest)
    assert "=" not in token
    assert page_token.decode(token, digest) == (WHEN, "fb_abc")


def test_round_trip_normalizes_to_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=-7)))
    digest = page_token.filter_digest(S.FeedbackFilter())
    when, _ = page_token.decode(page_token.encode(local, "fb_1", digest), digest)
    assert when == WHEN and when.utcoffset() == timedelta(0)


def test_digest_depends_on_the_filter_only() -> None:
    a = page_token.filter_digest(S.FeedbackFilter(categories=["x"], session_id="s"))
    b = page_token.filter_digest(S.FeedbackFilter(session_id="s", categories=["x"]))
    c = page_token.filter_digest(S.FeedbackFilter(categories=["y"], session_id="s"))
    assert a == b != c
    assert len(a) == 16


def test_token_for_another_filter_is_refused() -> None:
    token = page_token.encode(WHEN, "fb_1", page_token.filter_digest(S.FeedbackFilter()))
    other = page_token.filter_digest(S.FeedbackFilter(user_roles=["agent"]))
    with pytest.raises(InvalidArgument) as raised:
        page_token.decode(token, other)
    assert raised.value.message == "page_token: was issued for a different filter"


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "not base64 at all",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
        raw_token("a string"),  # not an object
        raw_token({"t": WHEN.isoformat(), "i": "fb_1"}),  # no digest
        raw_token({"t": "yesterday", "i": "fb_1", "f": "d"}),  # bad time
        raw_token({"t": "2025-01-02T03:04:05", "i": "fb_1", "f": "d"}),  # naive time
        raw_token({"t": WHEN.isoformat(), "i": 7, "f": "d"}),  # id not a string
        raw_token({"t": WHEN.isoformat(), "i": "fb_1", "f": None}),  # digest not a string
        raw_token([1, 2, 3]),
    ],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        page_token.decode(token, "d")
    assert raised.value.message == MALFORMED
    assert [(v.field, v.description) for v in raised.value.violations] == [
        ("page_token", "is malformed; pass next_page_token unchanged")
    ]
