"""Recall fixtures: Milvus Lite in tmp dirs (the real model is tests/conftest.py's `embedder`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from feedbackloop.recall.index import FeedbackIndex


@pytest.fixture(scope="module")
def lite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One Lite database per module (each opens an in-process server); one collection per test.
    return str(Path(tmp_path_factory.mktemp("milvus-lite")) / "recall.db")


@pytest.fixture
def index(lite_uri: str, request: pytest.FixtureRequest) -> Iterator[FeedbackIndex]:
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:180]
    idx = FeedbackIndex(lite_uri, name)
    idx.drop()
    try:
        yield idx
    finally:
        idx.drop()
        idx.close()
