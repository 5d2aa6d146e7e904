"""The bounds on calls that cluster a window (TopIssues, GetTrends by issue), over real gRPC.

A window holding more complaints than the server clusters is refused before any vector is read;
past the concurrency limit a call waits briefly, then gets RESOURCE_EXHAUSTED; calls under both
bounds answer as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from recall_server_support import indexing_server, top_issues, wait_indexed
from sqlalchemy import func, select

from feedbackloop.store.issue_models import IssueGroupRow
from feedbackloop.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    recall_pb2,
    recall_pb2_grpc,
)
from support import ts

HOUR = timedelta(hours=1)
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
PRICING = [
    "The bot quoted last year's price for the Pro plan.",
    "Pricing in the answer is outdated, Pro costs more now.",
    "It told me the old subscription price.",
]
TONE = [
    "The assistant was rude and condescending to me.",
    "Very impolite answer, it mocked my question.",
    "Unfriendly, sarcastic tone in the reply.",
    "rude bot, it talked down to me",
    "Sarcastic and rude, it made fun of me.",
]
ISSUE = recall_pb2.TREND_DIMENSION_ISSUE
WAIT_SECONDS = 0.3


def _submit(server: Any, when: datetime, texts: list[str], thumb: int = common_pb2.THUMB_DOWN) -> None:
    ingest = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    for n, text in enumerate(texts):
        interaction = ingest.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(
                    session_id=f"s-{when.timestamp()}-{thumb}-{n}",
                    input_messages=[common_pb2.ChatMessage(role="user", content="Can you help me?")],
                    response="Sure.",
                )
            )
        ).interaction_id
        feedback = common_pb2.Feedback(interaction_id=interaction, thumb=thumb, comment=text)
        feedback.occurred_at.CopyFrom(ts(when))
        ingest.SubmitFeedback(ingestion_pb2.SubmitFeedbackRequest(feedback=feedback))


def _trends(server: Any, window: timedelta, group_by: int = ISSUE) -> recall_pb2.GetTrendsResponse:
    return server.stub(recall_pb2_grpc.RecallServiceStub).GetTrends(
        recall_pb2.GetTrendsRequest(
            window=duration_pb2.Duration(seconds=int(window.total_seconds())),
            bucket=duration_pb2.Duration(seconds=3600),
            end=ts(NOW),
            group_by=group_by,
        )
    )


def _refusal(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, Any]:
    """The code, message and rich status of the RpcError `call` raises."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    return error.code(), error.details(), rpc_status.from_call(error)


def _details_of(status: Any, message_type: Any) -> list[Any]:
    out = []
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            unpacked = message_type()
            detail.Unpack(unpacked)
            out.append(unpacked)
    return out


def _stored_groups(server: Any) -> int:
    with server.app.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(IssueGroupRow)) or 0)


def test_a_window_with_more_complaints_than_the_bound_is_refused_before_any_vector_is_read(
    make_server: Callable[..., Any], embedder: Any, store_url: str, spans: Any
) -> None:
    server = indexing_server(make_server, embedder, database_url=store_url, recall_clustering_max_feedback=4)
    _submit(server, NOW - 10 * HOUR, PRICING)  # 3 complaints
    _submit(server, NOW - 10 * HOUR, ["Great answer, thanks!"] * 4, thumb=common_pb2.THUMB_UP)
    _submit(server, NOW - 30 * HOUR, TONE)  # 5 complaints
    wait_indexed(server)
    spans.clear()

    # [now-48h, now) holds all 8 complaints (the thumbs-up are no complaints).
    code, message, status = _refusal(lambda: top_issues(server, NOW - 48 * HOUR, NOW))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == (
        "time_range: holds 8 complaints matching the filter; this server clusters at most 4 complaints "
        "a window: narrow time_range or filter the complaints (e.g. by category, prompt or model version)"
    )
    (bad_request,) = _details_of(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["time_range"]

    # [now-20h, now) holds 3, but the window it is compared with, [now-40h, now-20h), holds 5.
    code, message, _ = _refusal(lambda: top_issues(server, NOW - 20 * HOUR, NOW))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith(
        "time_range: the window of the same length before it (the one growth is measured against) holds 5; "
        "this server clusters at most 4 complaints a window"
    )

    # GetTrends by issue clusters [now-96h, now) for a 48 h window: the same bound, on `window`.
    code, message, status = _refusal(lambda: _trends(server, 48 * HOUR))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith(
        "window: holds 8 complaints matching the filter; this server clusters at most 4"
    )
    assert "narrow window or filter" in message
    (bad_request,) = _details_of(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["window"]

    # Refused on the count alone: no window was read from Milvus, no group stored.
    assert not [s for s in spans.get_finished_spans() if s.name == "milvus.query_window"]
    assert _stored_groups(server) == 0

    # Under the bound, both answer: [now-12h, now) holds 3, the window before it none.
    top = top_issues(server, NOW - 12 * HOUR, NOW)
    assert (top.total_negative, top.previous_total_negative) == (3, 0)
    found = _trends(server, 12 * HOUR)
    assert (found.negative, found.previous_negative) == (3, 0)
    assert sum(group.total for group in found.groups) == 3
    # A dimension that does not cluster is not bounded.
    assert _trends(server, 48 * HOUR, recall_pb2.TREND_DIMENSION_SIGNAL).negative == 8


class _HeldWindows:
    """Fault injection: the first window read blocks until released (a clustering call held
    busy); `fail_next` makes the next read raise instead."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        self._inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_next = False
        self._held = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected: the window read failed")
        if not self._held:
            self._held = True
            self.entered.set()
            assert self.release.wait(30), "the held call was never released"
        return self._inner(*args, **kwargs)


def test_past_the_concurrency_limit_a_clustering_call_waits_then_is_told_to_retry(
    make_server: Callable[..., Any], embedder: Any, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = indexing_server(
        make_server,
        embedder,
        database_url=store_url,
        recall_clustering_concurrency=1,
        recall_clustering_wait_seconds=WAIT_SECONDS,
    )
    _submit(server, NOW - 2 * HOUR, PRICING)
    wait_indexed(server)
    held = _HeldWindows(server.app.recall.window_vectors)
    monkeypatch.setattr(server.app.recall, "window_vectors", held)

    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(top_issues, server, NOW - 12 * HOUR, NOW)
        assert held.entered.wait(30), "the first call never reached the window read"

        started = time.monotonic()
        code, message, status = _refusal(lambda: top_issues(server, NOW - 12 * HOUR, NOW))
        waited = time.monotonic() - started
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert message == (
            "this server already runs 1 clustering call (TopIssues, GetTrends by issue), its limit, "
            f"and none ended within {WAIT_SECONDS:g}s; retry in a few seconds"
        )
        assert WAIT_SECONDS <= waited < WAIT_SECONDS + 5
        (retry,) = _details_of(status, error_details_pb2.RetryInfo)
        assert retry.retry_delay.seconds > 0

        # GetTrends by issue shares the limit; a dimension that does not cluster does not.
        code, message, _ = _refusal(lambda: _trends(server, 12 * HOUR))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry" in message
        assert _trends(server, 12 * HOUR, recall_pb2.TREND_DIMENSION_SIGNAL).negative == 3

        held.release.set()
        assert busy.result(timeout=30).total_negative == 3

    # The slot is free again once the call ends, and after a call that failed inside it.
    assert top_issues(server, NOW - 12 * HOUR, NOW).total_negative == 3
    held.fail_next = True
    code, message, _ = _refusal(lambda: top_issues(server, NOW - 12 * HOUR, NOW))
    # The injected failure itself, inside the slot: not a refusal for want of one.
    assert code == grpc.StatusCode.INTERNAL
    assert message.startswith("internal error (RuntimeError); trace id ")
    assert _trends(server, 12 * HOUR).negative == 3
