"""Helpers shared by the recall integration tests (imported by name; not a test module)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from feedbackloop.v1 import common_pb2, pipeline_pb2, pipeline_pb2_grpc, recall_pb2, recall_pb2_grpc
from support import ts


def indexing_server(make_server: Callable[..., Any], embedder: Any, **settings: Any) -> Any:
    """A real server whose pipeline embeds and indexes each submitted complaint within a fraction
    of a second (batches close after 20 ms, jobs are polled every 50 ms); `settings` add to it."""
    return make_server(
        embedder=embedder,
        pipeline_enabled=True,
        embedding_batch_max_wait_ms=20,
        pipeline_poll_seconds=0.05,
        **settings,
    )


def wait_indexed(server: Any) -> None:
    """Returns once the pipeline has no feedback left to index; fails after 60 s."""
    stub = server.stub(pipeline_pb2_grpc.PipelineServiceStub)
    deadline = time.monotonic() + 60
    while stub.GetPipelineStatus(pipeline_pb2.GetPipelineStatusRequest()).pending_index:
        assert time.monotonic() < deadline, "the pipeline did not index in 60 s"
        time.sleep(0.1)


def top_issues(server: Any, start: datetime, end: datetime) -> recall_pb2.TopIssuesResponse:
    """TopIssues over [start, end), with no filter."""
    return server.stub(recall_pb2_grpc.RecallServiceStub).TopIssues(
        recall_pb2.TopIssuesRequest(time_range=common_pb2.TimeRange(start=ts(start), end=ts(end)))
    )
