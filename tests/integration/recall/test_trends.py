"""GetTrends and `feedbackloop trends` against a real server on each store backend."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from feedbackloop.cli import main
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc, recall_pb2, recall_pb2_grpc
from support import bearer, code_of, ts

END = datetime(2026, 3, 15, tzinfo=UTC)
START = END - timedelta(days=4)
DAY = timedelta(days=1)
WINDOW = duration_pb2.Duration(seconds=4 * 86400)
CATEGORY = recall_pb2.TREND_DIMENSION_CATEGORY


class Feeder:
    def __init__(self, server: Any, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.ingest = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
        self.recall = server.stub(recall_pb2_grpc.RecallServiceStub)
        self.metadata = metadata
        self.sessions = 0

    def interaction(self, prompt_version: str) -> str:
        """A new session's interaction, with prompt support@<version> and model v<version>, or
        neither for an empty version."""
        self.sessions += 1
        interaction = common_pb2.Interaction(
            session_id=f"s{self.sessions}",
            input_messages=[common_pb2.ChatMessage(role="user", content="What does Pro cost?")],
            response="Ten dollars.",
        )
        if prompt_version:
            interaction.prompt.CopyFrom(common_pb2.PromptRef(name="support", version=prompt_version))
            interaction.model.CopyFrom(common_pb2.ModelRef(name="m", version="v" + prompt_version))
        request = ingestion_pb2.RecordInteractionRequest(interaction=interaction)
        return self.ingest.RecordInteraction(request, metadata=self.metadata).interaction_id

    def feedback(self, when: datetime, *, prompt: str = "", **fields: Any) -> None:
        feedback = common_pb2.Feedback(occurred_at=ts(when), **fields)
        interaction_id = self.interaction(prompt)
        if prompt:
            feedback.interaction_id = interaction_id
        else:  # session-level feedback: no interaction, so no prompt or model
            feedback.session_id = f"s{self.sessions}"
        self.ingest.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(feedback=feedback), metadata=self.metadata
        )

    def trends(self, group_by: int = CATEGORY, **fields: Any) -> recall_pb2.GetTrendsResponse:
        request = recall_pb2.GetTrendsRequest(window=WINDOW, end=ts(END), group_by=group_by, **fields)
        return self.recall.GetTrends(request, metadata=self.metadata)


DOWN, UP = common_pb2.THUMB_DOWN, common_pb2.THUMB_UP


def load(feeder: Feeder) -> None:
    """Four days to END and the four before, bucketed by day; prompt "1" before, "2" after."""
    at = START
    feeder.feedback(at, rating=1)  # on the window's start: in bucket 0; session-level
    feeder.feedback(at + timedelta(hours=6), prompt="1", thumb=DOWN, categories=["outdated_info"])
    feeder.feedback(at + timedelta(hours=7), prompt="1", thumb=UP)
    feeder.feedback(at + 2 * DAY + timedelta(hours=12), prompt="2", thumb=DOWN, categories=["outdated_info"])
    # A thumb up with categories is no complaint; the feedback counts in each of its categories.
    feeder.feedback(
        END - timedelta(seconds=1), prompt="2", thumb=UP, categories=["outdated_info", "too_long"]
    )
    feeder.feedback(END, prompt="2", thumb=DOWN, categories=["outdated_info"])  # the end is exclusive
    feeder.feedback(START - 3 * DAY, prompt="1", thumb=DOWN, categories=["outdated_info"])
    feeder.feedback(START - 2 * DAY, prompt="1", thumb=DOWN, categories=["outdated_info"])
    feeder.feedback(START - timedelta(seconds=1), prompt="1", rating=5)
    feeder.feedback(START - 4 * DAY - timedelta(seconds=1), prompt="1", thumb=DOWN)  # before both windows


def rows(response: recall_pb2.GetTrendsResponse) -> list[tuple[Any, ...]]:
    return [
        (
            g.key,
            [(b.total, b.negative) for b in g.buckets],
            g.total,
            g.negative,
            g.previous_total,
            g.previous_negative,
        )
        for g in response.groups
    ]


def test_buckets_counts_shares_and_change_by_each_dimension(server: Any) -> None:
    feeder = Feeder(server)
    load(feeder)

    by_category = feeder.trends()
    assert rows(by_category) == [
        ("outdated_info", [(1, 1), (0, 0), (1, 1), (1, 0)], 3, 2, 2, 2),
        ("", [(2, 1), (0, 0), (0, 0), (0, 0)], 2, 1, 1, 0),
        ("too_long", [(0, 0), (0, 0), (0, 0), (1, 0)], 1, 0, 0, 0),
    ]
    outdated = by_category.groups[0]
    assert [b.start.ToDatetime(tzinfo=UTC) for b in outdated.buckets] == [START + i * DAY for i in range(4)]
    assert [b.negative_share for b in outdated.buckets] == [1.0, 0.0, 1.0, 0.0]
    assert outdated.negative_share == pytest.approx(2 / 3)
    assert outdated.previous_negative_share == 1.0
    assert outdated.total_change == pytest.approx(0.5)
    assert outdated.negative_share_change == pytest.approx(2 / 3 - 1)
    assert by_category.groups[2].total_change == 1.0  # none before: against 1
    # Totals count each feedback once, whatever its categories.
    totals = (
        by_category.total,
        by_category.negative,
        by_category.previous_total,
        by_category.previous_negative,
    )
    assert totals == (5, 3, 3, 2)
    assert by_category.groups_found == 3
    assert by_category.window.start.ToDatetime(tzinfo=UTC) == START
    assert by_category.bucket.seconds == 86400

    # "Did the new prompt version reduce complaints?" Ties on the window break on the previous one.
    by_prompt = feeder.trends(recall_pb2.TREND_DIMENSION_PROMPT_VERSION)
    assert [
        (g.key, g.total, g.negative, g.previous_total, g.previous_negative) for g in by_prompt.groups
    ] == [
        ("support@1", 2, 1, 3, 2),
        ("support@2", 2, 1, 0, 0),
        ("", 1, 1, 0, 0),
    ]
    by_model = feeder.trends(recall_pb2.TREND_DIMENSION_MODEL_VERSION, top=2)
    assert [g.key for g in by_model.groups] == ["v1", "v2"]
    assert by_model.groups_found == 3

    by_signal = feeder.trends(recall_pb2.TREND_DIMENSION_SIGNAL)
    assert [
        (g.key, g.total, g.negative, g.previous_total, g.previous_negative) for g in by_signal.groups
    ] == [
        ("category", 3, 2, 2, 2),
        ("thumbs_down", 2, 2, 2, 2),
        ("thumbs_up", 2, 0, 0, 0),
        ("rating", 1, 1, 1, 0),
    ]

    # A filter narrows before grouping; a 2-day bucket halves the buckets.
    filtered = feeder.trends(
        filter=common_pb2.FeedbackFilter(model_versions=["v2"]),
        bucket=duration_pb2.Duration(seconds=2 * 86400),
    )
    assert rows(filtered) == [
        ("outdated_info", [(0, 0), (2, 1)], 2, 1, 0, 0),
        ("too_long", [(0, 0), (1, 0)], 1, 0, 0, 0),
    ]


def test_an_uneven_bucket_leaves_the_last_one_short(server: Any) -> None:
    feeder = Feeder(server)
    feeder.feedback(END - timedelta(hours=1), thumb=DOWN)
    response = feeder.trends(bucket=duration_pb2.Duration(seconds=3 * 86400))
    assert [(b.start.ToDatetime(tzinfo=UTC), b.total) for b in response.groups[0].buckets] == [
        (START, 0),
        (START + 3 * DAY, 1),
    ]


def test_bad_input_names_the_field(server: Any) -> None:
    feeder = Feeder(server)

    def refused(**fields: Any) -> str:
        values: dict[str, Any] = {"window": WINDOW, "group_by": CATEGORY, **fields}
        code, details = code_of(lambda: feeder.recall.GetTrends(recall_pb2.GetTrendsRequest(**values)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        return details

    assert "window: is outside the Duration range" in refused(window=duration_pb2.Duration(seconds=10**12))
    assert "window: is required" in refused(window=None)
    assert "window: must be positive" in refused(window=duration_pb2.Duration(seconds=-5))
    assert "window: must be whole seconds" in refused(window=duration_pb2.Duration(seconds=60, nanos=5))
    assert "window: would start before 0001-01-01" in refused(
        window=duration_pb2.Duration(seconds=300_000_000_000)
    )
    assert "bucket: gives 400 buckets over the window; at most 366" in refused(
        window=duration_pb2.Duration(seconds=400 * 86400)
    )
    assert "bucket: is longer than the window" in refused(bucket=duration_pb2.Duration(seconds=5 * 86400))
    assert "group_by: unknown value 42" in refused(group_by=42)
    assert "group_by: is required" in refused(group_by=recall_pb2.TREND_DIMENSION_UNSPECIFIED)
    assert "top: must be between 1 and 100" in refused(top=101)
    assert "end: is outside the Timestamp range" in refused(end={"seconds": 10**12})
    assert "filter.time_range: use the request's window" in refused(
        filter=common_pb2.FeedbackFilter(time_range=common_pb2.TimeRange(start=ts(START), end=ts(END)))
    )
    # The previous window must fit in the Timestamp range too.
    early = datetime(1, 1, 3, tzinfo=UTC)
    assert "window: the previous window" in refused(
        end=ts(early), window=duration_pb2.Duration(seconds=86400 * 2)
    )


def test_another_projects_feedback_is_not_counted(
    make_server: Callable[..., Any], store_url: str, db: Any
) -> None:
    from feedbackloop.auth import Scope
    from feedbackloop.store import keys

    other_key = keys.create_key(db, "other", frozenset({Scope.INGEST, Scope.READ}))
    server = make_server(database_url=store_url)
    mine, theirs = Feeder(server), Feeder(server, bearer(other_key))
    mine.feedback(START + DAY, thumb=DOWN, categories=["outdated_info"])
    theirs.feedback(START + DAY, thumb=DOWN, categories=["outdated_info"])
    theirs.feedback(START + DAY, thumb=DOWN, categories=["wrong_tone"])
    assert rows(mine.trends()) == [("outdated_info", [(0, 0), (1, 1), (0, 0), (0, 0)], 1, 1, 0, 0)]
    assert [(g.key, g.total) for g in theirs.trends().groups] == [("outdated_info", 1), ("wrong_tone", 1)]
    code, _ = code_of(lambda: theirs.trends(project="default"))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_trends_command_prints_a_table_with_sparklines(
    server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    feeder = Feeder(server)
    connect = ("--server", server.address)
    command = ["trends", "--by", "category", "--window", "4d", "--end", END.isoformat(), *connect]
    assert main(command) == 0
    assert capsys.readouterr().out == "no feedback in the window (0 in the 4d before)\n"

    load(feeder)
    assert main([*command, "--bucket", "1d", "--top", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "5 feedback in the last 4d, 60% negative; 3 in the 4d before, 67% negative",
        "category       trend   total    neg  before    neg   change  neg pts",
        "outdated_info  █▁██        3    67%       2   100%     +50%    -33.3",
        "(none)         █▁▁▁        2    50%       1     0%    +100%    +50.0",
        "(1 more groups; --top shows more)",
    ]
    assert main([*command[:2], "prompt-version", *command[3:], "--category", "outdated_info"]) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [
        "support@2       ▁▁██        2    50%       0     0%    +200%    +50.0",
        "support@1       █▁▁▁        1   100%       2   100%     -50%     +0.0",
    ]
    assert main(["trends", "--by", "category", "--window", "400d", *connect]) == 1
    assert "INVALID_ARGUMENT: bucket: gives 400 buckets" in capsys.readouterr().err
    assert main(["trends", "--by", "category", "--window", "soon", *connect]) == 2
    assert 'invalid duration "soon"' in capsys.readouterr().err


def test_sparkline_scales_to_the_row_and_keeps_small_values_above_empty() -> None:
    from feedbackloop.recall.trends_cli import sparkline

    assert sparkline([0, 1, 2, 4, 8, 100]) == "▁▂▂▂▂█"
    assert sparkline([1, 2, 3, 4, 5, 6, 7]) == "▂▃▄▅▆▇█"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([]) == ""
