"""paging.py tokens: they round-trip, carry their filter, and refuse tampering."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from feedbackloop import paging
from feedbackloop.errors import InvalidArgument
from feedbackloop.v1 import common_pb2 as S
from feedbackloop.v1 import ingestion_pb2 as I

MALFORMED = "page_token: is malformed; pass next_page_token unchanged"
WHEN = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def raw_token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def test_round_trip() -> None:
    digest = paging.filter_digest(S.FeedbackFilter(signals=[S.SIGNAL_THUMBS_DOWN]))
    token = paging.encode([WHEN, "fb_abc", 7], digest)
    assert "=" not in token
    assert paging.decode(token, digest, 3) == [WHEN, "fb_abc", 7]


def test_round_trip_normalizes_to_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=-7)))
    digest = paging.filter_digest(S.FeedbackFilter())
    when, _ = paging.decode(paging.encode([local, "fb_1"], digest), digest, 2)
    assert when == WHEN and when.utcoffset() == timedelta(0)


def test_digest_depends_on_the_filter_only() -> None:
    a = paging.filter_digest(S.FeedbackFilter(categories=["x"], session_id="s"))
    b = paging.filter_digest(S.FeedbackFilter(session_id="s", categories=["x"]))
    c = paging.filter_digest(S.FeedbackFilter(categories=["y"], session_id="s"))
    assert a == b != c
    assert len(a) == 16


def test_token_for_another_filter_is_refused() -> None:
    token = paging.encode([WHEN, "fb_1"], paging.filter_digest(S.FeedbackFilter()))
    other = paging.filter_digest(S.FeedbackFilter(user_roles=["agent"]))
    with pytest.raises(InvalidArgument) as raised:
        paging.decode(token, other, 2)
    assert raised.value.message == "page_token: was issued for a different filter"


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "not base64 at all",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
        raw_token("a string"),  # not an object
        raw_token({"k": [{"dt": WHEN.isoformat()}, "fb_1"]}),  # no digest
        raw_token({"k": [{"dt": "yesterday"}, "fb_1"], "f": "d"}),  # bad time
        raw_token({"k": [{"dt": "2025-01-02T03:04:05"}, "fb_1"], "f": "d"}),  # naive time
        raw_token({"k": [{"dt": WHEN.isoformat()}, 1.5], "f": "d"}),  # a value of no sort-key type
        raw_token({"k": [{"dt": WHEN.isoformat()}, True], "f": "d"}),  # a boolean is not an int here
        raw_token({"k": [{"dt": WHEN.isoformat()}, "fb_1"], "f": None}),  # digest not a string
        raw_token({"k": "fb_1", "f": "d"}),  # values not a list
        raw_token({"k": [{"dt": WHEN.isoformat()}], "f": "d"}),  # one key short
        raw_token([1, 2, 3]),
    ],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        paging.decode(token, "d", 2)
    assert raised.value.message == MALFORMED
    assert [(v.field, v.description) for v in raised.value.violations] == [
        ("page_token", "is malformed; pass next_page_token unchanged")
    ]


def test_the_digest_leaves_out_the_page_size_and_token_only() -> None:
    first = I.ListFeedbackRequest(filter=S.FeedbackFilter(session_id="s"), page_size=5)
    later = I.ListFeedbackRequest(filter=S.FeedbackFilter(session_id="s"), page_size=9, page_token="t")
    other = I.ListFeedbackRequest(filter=S.FeedbackFilter(session_id="z"), page_size=5)
    assert paging.filter_digest(first) == paging.filter_digest(later) != paging.filter_digest(other)
