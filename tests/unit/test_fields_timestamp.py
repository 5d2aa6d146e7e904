"""fields.timestamp: the datetime protobuf's own conversion gives, over the whole range."""

from __future__ import annotations

import random
from datetime import UTC

import pytest
from google.protobuf import timestamp_pb2

from feedbackloop import fields
from feedbackloop.errors import Violations

EDGES = [fields.TIMESTAMP_MIN_SECONDS, fields.TIMESTAMP_MAX_SECONDS, -1, 0, 1, 951_782_400, 1_764_750_000]


def test_every_valid_timestamp_converts_as_protobuf_converts_it() -> None:
    rng = random.Random(7)
    seconds = EDGES + [
        rng.randint(fields.TIMESTAMP_MIN_SECONDS, fields.TIMESTAMP_MAX_SECONDS) for _ in range(2_000)
    ]
    for second in seconds:
        for nanos in (0, 999, 1_000, 1_999, 999_999_999, rng.randint(0, 999_999_999)):
            message = timestamp_pb2.Timestamp(seconds=second, nanos=nanos)
            v = Violations()
            got = fields.timestamp(v, "t", message)
            want = message.ToDatetime(tzinfo=UTC)
            assert not v.items
            assert got == want and got is not None and got.tzinfo is UTC, (second, nanos)
            assert got.isoformat() == want.isoformat()


@pytest.mark.parametrize(
    ("seconds", "nanos", "message"),
    [
        (fields.TIMESTAMP_MAX_SECONDS + 1, 0, "is outside the Timestamp range"),
        (fields.TIMESTAMP_MIN_SECONDS - 1, 0, "is outside the Timestamp range"),
        (0, -1, "nanos must be between 0 and 999999999 (got -1)"),
        (0, 1_000_000_000, "nanos must be between 0 and 999999999 (got 1000000000)"),
    ],
)
def test_an_invalid_timestamp_is_a_violation_naming_the_field(seconds: int, nanos: int, message: str) -> None:
    v = Violations()
    assert (
        fields.timestamp(v, "feedback.occurred_at", timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
        is None
    )
    assert [(x.field, message in x.description) for x in v.items] == [("feedback.occurred_at", True)]
