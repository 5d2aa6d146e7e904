"""GetTrends by TopIssues group, through the real server, pipeline and model, on each backend."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from recall_server_support import indexing_server, wait_indexed

from feedbackloop.cli import main
from feedbackloop.recall.trends_cli import sparkline
from feedbackloop.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    recall_pb2,
    recall_pb2_grpc,
)
from support import code_of, ts

DAY = timedelta(days=1)
END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = END - 4 * DAY
WINDOW = duration_pb2.Duration(seconds=4 * 86400)
ISSUE = recall_pb2.TREND_DIMENSION_ISSUE
PRICING = [
    "The bot quoted last year's price for the Pro plan.",
    "Pricing in the answer is outdated, Pro costs more now.",
    "It told me the old subscription price.",
    "wrong price for the pro plan, you raised it",
    "The price it gave for the Pro plan is out of date.",
    "It still quotes the old Pro plan price.",
]
TONE = [
    "The assistant was rude and condescending to me.",
    "Very rude and impolite reply, it mocked me.",
    "Unfriendly, sarcastic tone in the reply.",
    "Rude, condescending answer from the assistant.",
]


@pytest.fixture
def server(make_server: Callable[..., Any], embedder: Any, store_url: str) -> Any:
    return indexing_server(make_server, embedder, database_url=store_url)


def _feedback(server: Any, when: datetime, **fields: Any) -> str:
    ingest = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    session = f"s-{when.timestamp()}-{len(fields.get('comment', ''))}"
    interaction = ingest.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(
                session_id=session,
                input_messages=[common_pb2.ChatMessage(role="user", content="Can you help me?")],
                response="Sure.",
            )
        )
    ).interaction_id
    feedback = common_pb2.Feedback(interaction_id=interaction, occurred_at=ts(when), **fields)
    return ingest.SubmitFeedback(ingestion_pb2.SubmitFeedbackRequest(feedback=feedback)).feedback_id


def _load(server: Any) -> dict[str, list[str]]:
    """Pricing: four complaints the window before, two in the window (on its days 0 and 3).
    Tone: four in the window only (days 1, 1, 2, 3). One complaint like no other (day 2). A
    thumbs-up in the window is no complaint."""
    down = common_pb2.THUMB_DOWN
    ids = {
        "pricing_before": [
            _feedback(server, START - 3 * DAY + n * timedelta(hours=5), thumb=down, comment=text)
            for n, text in enumerate(PRICING[:4])
        ],
        "pricing": [
            _feedback(server, START + timedelta(hours=2), thumb=down, comment=PRICING[4]),
            _feedback(server, START + 3 * DAY + timedelta(hours=2), thumb=down, comment=PRICING[5]),
        ],
        "tone": [
            _feedback(server, START + day * DAY + timedelta(hours=n), thumb=down, comment=text)
            for n, (day, text) in enumerate(zip([1, 1, 2, 3], TONE, strict=True))
        ],
    }
    _feedback(server, START + DAY, thumb=common_pb2.THUMB_UP, comment="The Pro plan price was right, thanks.")
    # A lone complaint like no other: in no group.
    ids["lone"] = [
        _feedback(server, START + 2 * DAY, thumb=down, comment="Exporting my data to CSV crashes the app.")
    ]
    wait_indexed(server)
    return ids


def _trends(server: Any, **fields: Any) -> recall_pb2.GetTrendsResponse:
    request = recall_pb2.GetTrendsRequest(window=WINDOW, end=ts(END), group_by=ISSUE, **fields)
    return server.stub(recall_pb2_grpc.RecallServiceStub).GetTrends(request)


def test_trends_by_issue_follow_each_lasting_group_across_both_windows(server: Any) -> None:
    _load(server)
    response = _trends(server)
    assert (response.total, response.negative, response.previous_total) == (8, 7, 4)
    by_label = {g.label: g for g in response.groups if g.key}
    pricing = next(g for label, g in by_label.items() if "price" in label or "pricing" in label)
    tone = next(g for label, g in by_label.items() if "rude" in label or "condescending" in label)
    assert pricing.key.startswith("ig_") and tone.key.startswith("ig_") and pricing.key != tone.key
    # Only complaints count; the thumbs-up about the price is in the response's totals alone.
    assert [(b.total, b.negative) for b in tone.buckets] == [(0, 0), (2, 2), (1, 1), (1, 1)]
    assert (tone.total, tone.previous_total, tone.negative_share) == (4, 0, 1.0)
    assert [b.total for b in pricing.buckets] == [1, 0, 0, 1]
    assert (pricing.total, pricing.previous_total, pricing.total_change) == (2, 4, -0.5)
    assert response.groups[0].key == tone.key  # most in the window first
    # Complaints in no group are the group "", last here (fewest in the window).
    assert [(g.key, g.label, [b.total for b in g.buckets]) for g in response.groups[2:]] == [
        ("", "", [0, 0, 1, 0])
    ]
    assert response.groups_found == len(response.groups) == 3

    # The same lasting ids TopIssues names for the window, and asking again changes nothing.
    top = server.stub(recall_pb2_grpc.RecallServiceStub).TopIssues(
        recall_pb2.TopIssuesRequest(time_range=common_pb2.TimeRange(start=ts(START), end=ts(END)))
    )
    assert {i.group_id for i in top.issues} <= {pricing.key, tone.key}
    assert tone.key in {i.group_id for i in top.issues}
    assert [(g.key, g.total, g.previous_total) for g in _trends(server).groups] == [
        (g.key, g.total, g.previous_total) for g in response.groups
    ]
    # top cuts the list; groups_found still counts every group.
    cut = _trends(server, top=1)
    assert [g.key for g in cut.groups] == [tone.key] and cut.groups_found == response.groups_found


def test_trends_by_issue_refuses_a_filter_topissues_cannot_apply(server: Any) -> None:
    code, details = code_of(lambda: _trends(server, filter=common_pb2.FeedbackFilter(session_id="s1")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "filter.session_id" in details
    empty = _trends(server)
    assert (empty.total, list(empty.groups), empty.groups_found) == (0, [], 0)


def test_trends_command_by_issue_names_each_group_and_its_id(
    server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _load(server)
    command = [
        "trends",
        "--by",
        "issue",
        "--window",
        "4d",
        "--end",
        END.isoformat(),
        "--server",
        server.address,
    ]
    assert main(command) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "8 feedback in the last 4d, 88% negative; 4 in the 4d before, 100% negative"
    assert lines[1].startswith("issue ")
    first = lines[2]
    assert ("rude" in first or "condescending" in first) and "[ig_" in first
    assert sparkline([0, 2, 1, 1]) in first.split("]")[1]  # tone: nothing on day 0, then 2, 1, 1
    ids = [line.split("[")[1].split("]")[0] for line in lines[2:] if "[ig_" in line]
    assert ids == [g.key for g in _trends(server).groups if g.key]
    assert lines[-1].startswith("(no group) ")
