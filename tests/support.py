"""Helpers every test folder uses (tests/ is on sys.path through its conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying an API key."""
    return (("authorization", f"Bearer {key}"),)


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and details of the RpcError `call` raises; fails if it succeeds."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details()  # type: ignore[attr-defined]
    raise AssertionError("the call succeeded")


def expect_error(call: Callable[[], Any], code: grpc.StatusCode, message: str) -> None:
    assert code_of(call) == (code, message)


def pages_of(call: Callable[[str], Any], field: str) -> list[list[Any]]:
    """The pages of a list call (`call(page_token)`), following next_page_token to the end."""
    pages, token = [], ""
    while True:
        response = call(token)
        pages.append(list(getattr(response, field)))
        token = response.next_page_token
        if not token:
            return pages
