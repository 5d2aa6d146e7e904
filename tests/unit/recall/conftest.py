"""Recall fixtures: the real bundled model (loaded once per session) and Milvus Lite in tmp dirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports sentence_transformers / huggingface_hub: nothing may download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from feedbackloop.recall.embedder import Embedder
from feedbackloop.recall.index import FeedbackIndex


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder().load()


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
