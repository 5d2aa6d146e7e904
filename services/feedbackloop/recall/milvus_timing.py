"""Milvus calls timed by operation, for `feedbackloop_milvus_duration_seconds`.

The index wraps its client in `timed`, so every write and read it makes is measured where it is
made, whichever path asked for it (the index stage, SearchSimilar, routing's similarity
aggregates, TopIssues windows). A failed call is measured too: a timeout is latency as well.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from pymilvus import MilvusClient

# The calls that reach the data; collection housekeeping (describe, has, load) is left out.
OPERATIONS = frozenset({"insert", "upsert", "delete", "search", "hybrid_search", "query", "get", "flush"})

Observe = Callable[[str, float], None]


class _TimedClient:
    def __init__(self, client: MilvusClient, observe: Observe) -> None:
        self._client = client
        self._observe = observe

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in OPERATIONS:
            return attribute
        observe = self._observe

        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                observe(name, time.perf_counter() - started)

        return call


def timed(client: MilvusClient, observe: Observe | None) -> MilvusClient:
    """`client`, with OPERATIONS reporting their duration to `observe` (as it is without one)."""
    if observe is None:
        return client
    return cast(MilvusClient, _TimedClient(client, observe))
