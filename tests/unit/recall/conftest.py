"""Recall fixtures: Milvus Lite in tmp dirs (the real model is tests/conftest.py's `embedder`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from recall_support import fresh_index

from feedbackloop.recall.index import FeedbackIndex


@pytest.fixture(scope="module")
def lite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One Lite database per module (each opens an in-process server); one collection per test.
    return str(Path(tmp_path_factory.mktemp("milvus-lite")) / "recall.db")


@pytest.fixture
def index(lite_uri: str, request: pytest.FixtureRequest) -> Iterator[FeedbackIndex]:
    yield from fresh_index(lite_uri, request)
