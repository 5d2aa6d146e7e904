"""The FeedbackIndex contract (tests/unit/recall/test_recall_index.py) against a real Milvus server.

The contract's test functions are imported here, so they run again with this module's `index`
fixture (pytest resolves a fixture from the requesting test's module). Skips when the server
cannot start, unless FEEDBACKLOOP_REQUIRE_MILVUS_SERVER=1 (then it fails).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "recall"))

from recall_support import fresh_index
from test_recall_index import *  # noqa: F403  (the contract's tests and fixtures)

from feedbackloop.recall.index import FeedbackIndex, _server_upsert_is_safe

pytestmark = pytest.mark.milvus_server

# About Lite's own in-process channel, not the index contract: it runs once, in the unit tests.
del test_an_idle_lite_channel_is_not_sent_away  # noqa: F821
del test_lite_flushes_every_so_many_written_rows  # noqa: F821  (Lite only)


@pytest.fixture
def index(milvus_server_uri: str, request: pytest.FixtureRequest) -> Iterator[FeedbackIndex]:
    yield from fresh_index(milvus_server_uri, request)


def test_server_is_real_and_version_known(index: FeedbackIndex) -> None:
    assert not index.is_lite
    version = index._server_version()
    assert version.startswith("v2."), version
    # milvus 2.3.5 misroutes upserts on partition-key collections: the index must work around it.
    assert index._upsert_safe is _server_upsert_is_safe(version)


def test_upsert_workaround_keeps_rows_in_their_partition(index: FeedbackIndex) -> None:
    from test_recall_index import DIM, row, unit

    index.ensure_collection(DIM)
    for _ in range(3):  # repeated upserts of the same ids: still exactly one row each, all findable
        index.upsert([row(i, project=f"proj{i % 3}", vector=unit(1, i / 10)) for i in range(9)])
    for p in range(3):
        assert index.count(f"proj{p}") == 3
        assert len(index.search(f"proj{p}", unit(1, 0), top_k=10)) == 3
