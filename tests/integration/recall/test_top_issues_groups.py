"""TopIssues over two windows through the real server: a group keeps its id, new ones show as new."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from recall_server_support import indexing_server, top_issues, wait_indexed
from sqlalchemy import select

from feedbackloop.store.issue_models import IssueGroupRow
from feedbackloop.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    recall_pb2,
)
from support import ts

PRICING = [
    "The bot quoted last year's price for the Pro plan.",
    "Pricing in the answer is outdated, Pro costs more now.",
    "It told me the old subscription price.",
    "wrong price for the pro plan, you raised it",
]
TONE = [
    "The assistant was rude and condescending to me.",
    "Very impolite answer, it mocked my question.",
    "Unfriendly, sarcastic tone in the reply.",
    "rude bot, it talked down to me",
]


@pytest.fixture
def server(make_server: Callable[..., Any], embedder: Any) -> Any:
    return indexing_server(make_server, embedder)


def _complain(server: Any, texts: list[str], when: datetime) -> list[str]:
    ingest = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    ids = []
    for text in texts:
        interaction = ingest.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(
                    session_id=f"s-{len(ids)}-{when.timestamp()}",
                    turn_index=0,
                    input_messages=[common_pb2.ChatMessage(role="user", content="Can you help me?")],
                    response="Sure.",
                )
            )
        ).interaction_id
        feedback = common_pb2.Feedback(interaction_id=interaction, thumb=common_pb2.THUMB_DOWN, comment=text)
        feedback.occurred_at.CopyFrom(ts(when))
        ids.append(ingest.SubmitFeedback(ingestion_pb2.SubmitFeedbackRequest(feedback=feedback)).feedback_id)
    return ids


def _issue_of(response: recall_pb2.TopIssuesResponse, members: list[str]) -> recall_pb2.Issue:
    """The group holding most of `members`, and nothing else (a loose one may stay unclustered)."""
    candidates = [i for i in response.issues if set(i.member_ids) <= set(members)]
    assert candidates, f"no group of {members}"
    issue = max(candidates, key=lambda i: len(i.member_ids))
    assert len(issue.member_ids) >= len(members) - 1
    return issue


def test_a_group_keeps_its_id_from_week_to_week_and_a_new_complaint_is_new(server: Any) -> None:
    week = timedelta(days=7)
    now = datetime.now(UTC).replace(microsecond=0)
    last_week = _complain(server, PRICING, now - week - timedelta(days=2))
    this_week_pricing = _complain(server, PRICING[:3], now - timedelta(days=2))
    this_week_tone = _complain(server, TONE, now - timedelta(days=1))
    wait_indexed(server)

    before = top_issues(server, now - 2 * week, now - week)
    pricing_before = _issue_of(before, last_week)
    assert pricing_before.new_in_window and pricing_before.group_id.startswith("ig_")
    assert "price" in pricing_before.label or "pricing" in pricing_before.label

    after = top_issues(server, now - week, now)
    pricing = _issue_of(after, this_week_pricing)
    tone = _issue_of(after, this_week_tone)
    assert pricing.group_id == pricing_before.group_id  # the same complaint, the same group
    assert pricing.previous_size >= 3 and not pricing.new_in_window
    assert pricing.first_seen.ToDatetime(tzinfo=UTC) == now - week - timedelta(days=2)
    assert tone.new_in_window and tone.group_id != pricing.group_id
    assert "rude" in tone.keywords
    assert after.groups_found == 2

    # Asked again, nothing changes identity.
    assert _issue_of(top_issues(server, now - week, now), this_week_tone).group_id == tone.group_id


def test_the_cli_shows_labels_and_what_is_new_this_window(
    server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from feedbackloop.cli import main

    now = datetime.now(UTC)
    _complain(server, PRICING, now - timedelta(hours=3))
    wait_indexed(server)
    assert main(["recall", "top-issues", "--window", "1d", "--server", server.address]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{len(PRICING)} complaints in the last 1d (0 before), 1 groups")
    first_issue = out.splitlines()[1]
    assert first_issue.startswith("NEW ") and "price" in first_issue and "[ig_" in first_issue
    assert "new in the last day: " in out
    assert first_issue.split()[2] == "new"  # no growth figure for a group that is new
    # Asked again, the group is still new in this window (first seen inside it), with one id.
    assert main(["recall", "top-issues", "--window", "1d", "--server", server.address]) == 0
    again = capsys.readouterr().out.splitlines()[1]
    assert again.split("[")[1] == first_issue.split("[")[1]


def test_top_issues_called_at_once_stores_each_group_once(
    make_server: Callable[..., Any], embedder: Any, store_url: str
) -> None:
    server = indexing_server(make_server, embedder, database_url=store_url)
    now = datetime.now(UTC).replace(microsecond=0)
    _complain(server, PRICING + TONE, now - timedelta(hours=2))
    wait_indexed(server)
    calls = 4
    barrier = threading.Barrier(calls)

    def call() -> recall_pb2.TopIssuesResponse:
        barrier.wait()
        return top_issues(server, now - timedelta(days=1), now)

    with ThreadPoolExecutor(calls) as pool:
        responses = list(pool.map(lambda _: call(), range(calls)))
    ids = {tuple(sorted(i.group_id for i in r.issues)) for r in responses}
    assert len(ids) == 1, f"concurrent calls named different groups: {ids}"
    assert len(next(iter(ids))) == 2
    with server.app.db.read() as session:
        stored = session.scalars(select(IssueGroupRow.id)).all()
    assert sorted(stored) == sorted(next(iter(ids)))


def test_the_cli_shows_growth_of_the_same_group_and_what_is_new_this_week(
    server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from feedbackloop.cli import main

    now = datetime.now(UTC)
    week = timedelta(days=7)
    _complain(server, PRICING[:2], now - week - timedelta(days=1))
    # Last week's TopIssues call gives the pricing complaint its lasting group.
    last_week = top_issues(server, now - 2 * week, now - week)
    assert len(last_week.issues) <= 1
    _complain(server, PRICING, now - timedelta(days=2))
    _complain(server, TONE, now - timedelta(days=1))
    wait_indexed(server)
    assert main(["recall", "top-issues", "--window", "7d", "--server", server.address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("8 complaints in the last 7d (2 before), 2 groups")
    pricing = next(line for line in lines if "price" in line and "[ig_" in line)
    tone = next(line for line in lines if "rude" in line and "[ig_" in line)
    # The pricing group grew from the 2 of the week before: the same group, not a new one.
    assert not pricing.startswith("NEW ") and "+100% from 2" in pricing
    assert tone.startswith("NEW ") and tone.split()[2] == "new"
    tone_label = tone.split("new", 1)[1].split("[")[0].strip()
    assert lines[-1] == f"new this week: {tone_label}"
