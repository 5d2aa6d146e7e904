"""TopIssues quality on hand-labeled feedback, through the real path a user's feedback takes.

Each labeled text is the comment of a thumbs-down on its own session, whose user question is the
same generic opening line for all (as the feedback of one application looks), submitted through
IngestionService, embedded and indexed by the pipeline (bundled model, Milvus Lite), and grouped
by the TopIssues RPC over the window. The targets, on each set:

- size-weighted purity >= 0.8 (of the texts in groups, the share in their group's majority cause);
- >= 70% of all texts in a group whose majority is their own cause (unclustered ones count as not);
- a group count between half and twice the number of causes.

The clustering's parameters were chosen on invoicing_feedback.yaml (25 causes about one invoicing
app, 550 texts) and checked on labeled_feedback.yaml (8 causes, 96 texts). The figures and the
model are printed and recorded with `record_property` (they land in --junitxml output).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from feedbackloop.recall.embedder import DEFAULT_MODEL
from feedbackloop.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    pipeline_pb2,
    pipeline_pb2_grpc,
    recall_pb2,
    recall_pb2_grpc,
)
from support import ts

DATA = Path(__file__).resolve().parents[2] / "testdata" / "recall"
SETS = {"invoicing_feedback": 25, "labeled_feedback": 8}  # file -> causes
OPENING = "Hi, I need some help with my account."


def load(name: str) -> list[tuple[str, str]]:
    causes = yaml.safe_load((DATA / f"{name}.yaml").read_text(encoding="utf-8"))["causes"]
    return [(cause, text) for cause, texts in causes.items() for text in texts]


def test_labeled_sets_shape() -> None:
    for name, causes in SETS.items():
        items = load(name)
        counts = Counter(cause for cause, _ in items)
        assert len(counts) == causes and all(n >= 10 for n in counts.values()), name
        assert len({text.lower() for _, text in items}) == len(items), f"{name}: a text repeats"
    assert len(load("invoicing_feedback")) >= 500


def submit(server: Any, name: str, items: list[tuple[str, str]], when: datetime) -> dict[str, str]:
    """Ingest every text as a thumbs-down comment; returns feedback id -> cause."""
    ingest = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    events = []
    for n, (_, text) in enumerate(items):
        interaction_id = ingest.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(
                    session_id=f"{name}-{n}",
                    turn_index=0,
                    input_messages=[common_pb2.ChatMessage(role="user", content=OPENING)],
                    response="Sure, what can I do for you?",
                    model=common_pb2.ModelRef(name="m", version="1"),
                    prompt=common_pb2.PromptRef(name="assistant", version="1"),
                )
            )
        ).interaction_id
        feedback = common_pb2.Feedback(
            interaction_id=interaction_id,
            thumb=common_pb2.THUMB_DOWN,
            comment=text,
            idempotency_key=f"{name}-{n}",
        )
        feedback.occurred_at.CopyFrom(ts(when))
        events.append(ingestion_pb2.SubmitFeedbackStreamRequest(feedback=feedback))
    acks = ingest.SubmitFeedbackStream(iter(events)).acks
    refused = [a.error for a in acks if not a.feedback_id]
    assert not refused, refused[:3]
    return {ack.feedback_id: cause for ack, (cause, _) in zip(acks, items, strict=True)}


def wait_indexed(server: Any, timeout: float = 600.0) -> None:
    stub = server.stub(pipeline_pb2_grpc.PipelineServiceStub)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stub.GetPipelineStatus(pipeline_pb2.GetPipelineStatusRequest()).pending_index == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the pipeline did not index in {timeout}s")


def figures(response: recall_pb2.TopIssuesResponse, cause_of: dict[str, str]) -> dict[str, float]:
    grouped = majority = own = 0
    for issue in response.issues:
        causes = Counter(cause_of[m] for m in issue.member_ids)
        top, count = causes.most_common(1)[0]
        grouped += issue.size
        majority += count
        own += causes[top]
    return {
        "purity": majority / grouped,
        "own_majority": own / len(cause_of),
        "groups": float(response.groups_found),
        "unclustered": float(response.unclustered),
    }


class Server:
    """A started App and a channel to it (one per module: both sets share the server)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")

    def stub(self, stub_class: Callable[[grpc.Channel], Any]) -> Any:
        return stub_class(self.channel)


@pytest.fixture(scope="module")
def quality_server(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Any]:
    from feedbackloop.config import Settings
    from feedbackloop.server import App

    app = App(
        Settings(
            host="127.0.0.1",
            port=0,
            data_dir=tmp_path_factory.mktemp("quality"),
            pipeline_enabled=True,
            policies_dir=None,
            embedding_batch_max_wait_ms=20,
            pipeline_poll_seconds=0.05,
        ),
        embedder=embedder,
    )
    app.start(wait_ready=True)
    server = Server(app)
    yield server
    server.channel.close()
    app.stop(grace=1.0)


@pytest.mark.parametrize("name", list(SETS))
def test_top_issues_separate_the_causes(
    name: str, quality_server: Any, embedder: Any, record_property: pytest.RecordProperty
) -> None:
    items = load(name)
    # Each set in its own day of the past weeks, so one window holds exactly one set.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = today - timedelta(days=7 * (1 + list(SETS).index(name)))
    cause_of = submit(quality_server, name, items, day + timedelta(hours=12))
    wait_indexed(quality_server)
    response = quality_server.stub(recall_pb2_grpc.RecallServiceStub).TopIssues(
        recall_pb2.TopIssuesRequest(
            time_range=common_pb2.TimeRange(start=ts(day), end=ts(day + timedelta(days=1))),
            min_size=1,
            max_issues=100,
        )
    )
    assert response.total_negative == len(items)
    assert len(response.issues) == response.groups_found  # every group fits in 100
    got = figures(response, cause_of)
    causes = SETS[name]
    model = quality_server.app.settings.embedding_model or DEFAULT_MODEL
    print(
        f"\nTopIssues on {name} ({len(items)} texts, {causes} causes, model {model}): "
        f"purity {got['purity']:.3f}, texts in an own-cause group {got['own_majority']:.3f}, "
        f"{got['groups']:.0f} groups, {got['unclustered']:.0f} unclustered"
    )
    for issue in response.issues[:5]:
        print(f"  {issue.size:4d}  {issue.label}")
    for key, value in got.items():
        record_property(f"top_issues.{name}.{key}", round(value, 4))
    assert got["purity"] >= 0.8
    assert got["own_majority"] >= 0.7
    assert causes / 2 <= got["groups"] <= 2 * causes
