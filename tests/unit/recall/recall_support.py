"""Helpers for the recall index tests, shared with the real-server run (imported by name)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from feedbackloop.recall.index import FeedbackIndex


def fresh_index(uri: str, request: pytest.FixtureRequest) -> Iterator[FeedbackIndex]:
    """An empty collection named after the test, at `uri` (Lite file or server), dropped after."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:180]
    idx = FeedbackIndex(uri, name)
    idx.drop()
    try:
        yield idx
    finally:
        idx.drop()
        idx.close()
