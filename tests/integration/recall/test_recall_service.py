"""RecallService and the index stage end to end: real model, Milvus Lite, real gRPC.

Feedback goes in through IngestionService only; the pipeline embeds and indexes it with no
further call, and every recall answer is read back from the relational store.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from recall_server_support import indexing_server

from feedbackloop.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    pipeline_pb2,
    pipeline_pb2_grpc,
    recall_pb2,
    recall_pb2_grpc,
)
from support import code_of, ts

PRICING = [
    "The bot quoted last year's price for the Pro plan.",
    "Pricing in the answer is outdated, Pro costs more now.",
    "It told me the old subscription price.",
]
TONE = [
    "The assistant was rude and condescending to me.",
    "Very impolite answer, it mocked my question.",
    "Unfriendly, sarcastic tone in the reply.",
]

# Each complaint comes with the question that led to it, as in real traffic.
QUESTIONS = {
    PRICING[0]: "How much is the Pro plan?",
    PRICING[1]: "What does Pro cost per month?",
    PRICING[2]: "Price of the pro subscription?",
    TONE[0]: "Why was my order cancelled?",
    TONE[1]: "Can I change my delivery address?",
    TONE[2]: "My package arrived damaged, what now?",
}


class Client:
    def __init__(self, server: Any, project: str = "") -> None:
        self.server = server
        self.project = project
        self.ingest = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
        self.recall = server.stub(recall_pb2_grpc.RecallServiceStub)
        self.pipeline = server.stub(pipeline_pb2_grpc.PipelineServiceStub)
        self._turn = 0

    def interaction(self, question: str, *, model_version: str = "v1", prompt: str = "support-answer") -> str:
        self._turn += 1
        return self.ingest.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                project=self.project,
                interaction=common_pb2.Interaction(
                    session_id=f"session-{self._turn}",
                    turn_index=0,
                    input_messages=[common_pb2.ChatMessage(role="user", content=question)],
                    response="An answer.",
                    model=common_pb2.ModelRef(name="m", version=model_version),
                    prompt=common_pb2.PromptRef(name=prompt, version="1"),
                ),
            )
        ).interaction_id

    def complain(
        self, comment: str, *, category: str = "", occurred_at: datetime | None = None, **kw: Any
    ) -> str:
        interaction_id = self.interaction(QUESTIONS.get(comment, "Can you help me with my account?"), **kw)
        feedback = common_pb2.Feedback(
            interaction_id=interaction_id, thumb=common_pb2.THUMB_DOWN, comment=comment
        )
        if category:
            feedback.categories.append(category)
        if occurred_at is not None:
            feedback.occurred_at.CopyFrom(ts(occurred_at))
        return self.ingest.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(project=self.project, feedback=feedback)
        ).feedback_id

    def wait_indexed(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.pipeline.GetPipelineStatus(
                pipeline_pb2.GetPipelineStatusRequest(project=self.project)
            )
            if status.pending_index == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"pipeline did not index in {timeout}s: {status}")

    def search(self, text: str, **kw: Any) -> list[tuple[str, float]]:
        response = self.recall.SearchSimilar(
            recall_pb2.SearchSimilarRequest(project=self.project, text=text, **kw)
        )
        return [(hit.feedback.id, hit.score) for hit in response.hits]


@pytest.fixture
def recall_server(make_server: Callable[..., Any], embedder: Any) -> Any:
    return indexing_server(make_server, embedder)


def test_submitted_feedback_is_indexed_and_found_by_meaning(recall_server: Any) -> None:
    client = Client(recall_server)
    pricing = [client.complain(text) for text in PRICING]
    tone = [client.complain(text) for text in TONE]
    client.wait_indexed()

    hits = client.search("the answer had an old, wrong price", top_k=3)
    assert {fid for fid, _ in hits} == set(pricing)
    assert [score for _, score in hits] == sorted((score for _, score in hits), reverse=True)

    response = client.recall.SearchSimilar(recall_pb2.SearchSimilarRequest(feedback_id=tone[0], top_k=2))
    assert {hit.feedback.id for hit in response.hits} == set(tone[1:])
    assert all(hit.feedback.comment in TONE for hit in response.hits)
    assert all(hit.interaction.input_messages[0].content for hit in response.hits)


def test_min_score_and_metadata_filters(recall_server: Any) -> None:
    client = Client(recall_server)
    old = client.complain(PRICING[0], model_version="v1", category="outdated_info")
    new = client.complain(PRICING[1], model_version="v2")
    tone = client.complain(TONE[0], model_version="v2", category="wrong_tone")
    client.wait_indexed()

    by_version = client.search("outdated price", filter=common_pb2.FeedbackFilter(model_versions=["v2"]))
    assert {fid for fid, _ in by_version} == {new, tone} and len(by_version) == 2
    by_category = client.search(
        "outdated price", filter=common_pb2.FeedbackFilter(categories=["outdated_info"])
    )
    assert [fid for fid, _ in by_category] == [old]
    strict = client.search("outdated price", min_score=0.99)
    assert strict == []


def test_signal_filters_match_what_the_pipeline_indexed(recall_server: Any) -> None:
    client = Client(recall_server)
    down = client.complain(PRICING[0])
    interaction_id = client.interaction(QUESTIONS[PRICING[1]])
    up = client.ingest.SubmitFeedback(
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=common_pb2.Feedback(
                interaction_id=interaction_id, thumb=common_pb2.THUMB_UP, comment=PRICING[1]
            )
        )
    ).feedback_id
    client.wait_indexed()

    thumbs_down = client.search(
        "price", filter=common_pb2.FeedbackFilter(signals=[common_pb2.SIGNAL_THUMBS_DOWN])
    )
    assert [fid for fid, _ in thumbs_down] == [down]
    thumbs_up = client.search(
        "price", filter=common_pb2.FeedbackFilter(signals=[common_pb2.SIGNAL_THUMBS_UP])
    )
    assert [fid for fid, _ in thumbs_up] == [up]
    commented = client.search("price", filter=common_pb2.FeedbackFilter(signals=[common_pb2.SIGNAL_COMMENT]))
    assert {fid for fid, _ in commented} == {down, up}


def test_tenants_never_see_each_other(
    make_server: Callable[..., Any], embedder: Any, store_url: str, db: Any
) -> None:
    from feedbackloop.auth import Scope
    from feedbackloop.store import keys

    key_a = keys.create_key(db, "tenant-a", frozenset({Scope.INGEST, Scope.READ}))
    key_b = keys.create_key(db, "tenant-b", frozenset({Scope.INGEST, Scope.READ}))
    server = indexing_server(make_server, embedder, database_url=store_url, allow_anonymous_loopback=False)
    a = _keyed_client(server, key_a)
    b = _keyed_client(server, key_b)
    mine = a.complain(PRICING[0])
    b.complain(PRICING[1])
    a.wait_indexed()
    b.wait_indexed()

    assert [fid for fid, _ in a.search(PRICING[1], top_k=10)] == [mine]
    # An adversarial filter value cannot widen the tenant condition.
    sneaky = common_pb2.FeedbackFilter(model_versions=['v1" or project_id != "tenant-a'])
    assert a.search(PRICING[1], filter=sneaky) == []
    code, _ = code_of(lambda: b.recall.SearchSimilar(recall_pb2.SearchSimilarRequest(feedback_id=mine)))
    assert code == grpc.StatusCode.NOT_FOUND


def _keyed_client(server: Any, key: str) -> Client:
    from feedbackloop.client import _KeyInterceptor

    channel = grpc.intercept_channel(grpc.insecure_channel(server.address), _KeyInterceptor(key))

    class _Keyed:
        address = server.address

        def stub(self, stub_class: Any) -> Any:
            return stub_class(channel)

    return Client(_Keyed())


@pytest.mark.parametrize(
    ("request_kwargs", "code", "message"),
    [
        ({"text": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "text: must not be empty"),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "query: set either text or feedback_id"),
        (
            {"feedback_id": "fb_nope"},
            grpc.StatusCode.NOT_FOUND,
            "feedback_id: no feedback 'fb_nope' in this project",
        ),
        (
            {"text": "x", "top_k": 101},
            grpc.StatusCode.INVALID_ARGUMENT,
            "top_k: must be between 1 and 100 (got 101)",
        ),
        (
            {"text": "x", "top_k": -1},
            grpc.StatusCode.INVALID_ARGUMENT,
            "top_k: must be between 1 and 100 (got -1)",
        ),
        (
            {"text": "x", "filter": common_pb2.FeedbackFilter(session_id="s")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "filter.session_id: is not indexed for recall; filter sessions with ListFeedback",
        ),
        (
            {
                "text": "x",
                "filter": common_pb2.FeedbackFilter(
                    time_range=common_pb2.TimeRange(
                        start=ts(datetime(2026, 2, 1, tzinfo=UTC)), end=ts(datetime(2026, 1, 1, tzinfo=UTC))
                    )
                ),
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "filter.time_range: end must be after start",
        ),
    ],
)
def test_search_bad_input(
    recall_server: Any, request_kwargs: dict[str, Any], code: grpc.StatusCode, message: str
) -> None:
    stub = recall_server.stub(recall_pb2_grpc.RecallServiceStub)
    assert code_of(lambda: stub.SearchSimilar(recall_pb2.SearchSimilarRequest(**request_kwargs))) == (
        code,
        message,
    )


def test_filter_field_unknown_to_the_server_is_refused(recall_server: Any) -> None:
    # A client built against a newer API sends filter field 99; silently dropping it would widen
    # the search, so the server refuses it.
    raw_filter = common_pb2.FeedbackFilter(model_versions=["v1"]).SerializeToString() + bytes(
        [0x9A, 0x06, 0x01, 0x78]
    )
    request = recall_pb2.SearchSimilarRequest(text="x")
    request.filter.MergeFromString(raw_filter)
    stub = recall_server.stub(recall_pb2_grpc.RecallServiceStub)
    assert code_of(lambda: stub.SearchSimilar(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "filter: unknown filter field number(s) 99; this server does not support them",
    )


def test_top_issues_groups_complaints_and_reports_growth(recall_server: Any) -> None:
    client = Client(recall_server)
    now = datetime.now(UTC)
    this_week = [client.complain(t, occurred_at=now - timedelta(hours=2)) for t in PRICING + TONE]
    client.complain(PRICING[2], occurred_at=now - timedelta(days=8))
    client.wait_indexed()

    response = client.recall.TopIssues(
        recall_pb2.TopIssuesRequest(
            time_range=common_pb2.TimeRange(start=ts(now - timedelta(days=7)), end=ts(now)),
            min_size=2,
            min_similarity=0.3,
        )
    )
    assert response.total_negative == len(this_week)
    assert response.previous_total_negative == 1
    groups = [set(issue.member_ids) for issue in response.issues]
    assert set(this_week[:3]) in groups and set(this_week[3:]) in groups
    pricing_issue = next(i for i in response.issues if set(i.member_ids) == set(this_week[:3]))
    assert pricing_issue.previous_size == 1
    assert pricing_issue.growth == pytest.approx(2.0)
    assert pricing_issue.representative.id in this_week[:3]
    assert pricing_issue.representative_text.split("\n")[0] in PRICING  # the comment leads the text


def test_top_issues_lists_a_groups_categories_most_picked_first(recall_server: Any) -> None:
    client = Client(recall_server)
    now = datetime.now(UTC)
    picked = ["outdated_info", "wrong_tone", "outdated_info"]
    members = [
        client.complain(text, category=category, occurred_at=now - timedelta(hours=1))
        for text, category in zip(PRICING, picked, strict=True)
    ]
    client.wait_indexed()
    response = client.recall.TopIssues(
        recall_pb2.TopIssuesRequest(
            time_range=common_pb2.TimeRange(start=ts(now - timedelta(days=1)), end=ts(now)),
            min_similarity=0.3,
        )
    )
    (pricing,) = [i for i in response.issues if set(i.member_ids) == set(members)]
    assert list(pricing.top_categories) == ["outdated_info", "wrong_tone"]


def test_top_issues_requires_a_window(recall_server: Any) -> None:
    stub = recall_server.stub(recall_pb2_grpc.RecallServiceStub)
    assert code_of(lambda: stub.TopIssues(recall_pb2.TopIssuesRequest())) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "time_range: start and end are both required",
    )


def test_milvus_outage_retries_dead_letters_and_recovers(
    make_server: Callable[..., Any], embedder: Any, tmp_path: Path
) -> None:
    # A real fault: the Milvus Lite file's directory is blocked by a plain file, so opening the
    # index fails until the blocker is removed.
    blocker = tmp_path / "blocked"
    blocker.write_text("not a directory")
    server = make_server(
        embedder=embedder,
        milvus_uri=str(blocker / "milvus.db"),
        wait_ready=False,  # never ready while Milvus is blocked
        pipeline_enabled=True,
        pipeline_max_attempts=2,
        pipeline_backoff_seconds=0.05,
        embedding_batch_max_wait_ms=0,
        pipeline_poll_seconds=0.05,
    )
    client = Client(server)
    feedback_id = client.complain(PRICING[0])
    deadline = time.monotonic() + 30
    dead: Any = None
    while time.monotonic() < deadline:
        dead = client.pipeline.ListDeadLetters(pipeline_pb2.ListDeadLettersRequest())
        if dead.dead_letters:
            break
        time.sleep(0.05)
    assert [d.feedback_id for d in dead.dead_letters] == [feedback_id]
    assert dead.dead_letters[0].stage == "index"
    assert dead.dead_letters[0].attempts == 2
    assert dead.dead_letters[0].last_error

    blocker.unlink()
    retried = client.pipeline.RetryDeadLetters(pipeline_pb2.RetryDeadLettersRequest())
    assert retried.retried == 1
    client.wait_indexed()
    assert [fid for fid, _ in client.search(PRICING[0], top_k=1)] == [feedback_id]


def test_reindex_after_losing_the_milvus_file_restores_identical_results(
    make_server: Callable[..., Any], embedder: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared-data"
    settings = {
        "embedder": embedder,
        "data_dir": data_dir,
        "embedding_batch_max_wait_ms": 20,
        "pipeline_poll_seconds": 0.05,
    }
    first = make_server(pipeline_enabled=True, **settings)
    client = Client(first)
    for text in PRICING + TONE:
        client.complain(text)
    client.wait_indexed()
    before = client.search("rude pricing answer", top_k=6)
    first.close()

    # The relational store survives, the Milvus Lite file does not. (A new directory rather than
    # deleting files in place: Milvus Lite keeps an opened file's engine alive for the process.)
    survivor = tmp_path / "after-loss"
    survivor.mkdir()
    shutil.copy(data_dir / "feedbackloop.db", survivor / "feedbackloop.db")
    assert not (survivor / "milvus.db").exists()
    settings["data_dir"] = survivor
    second = make_server(pipeline_enabled=False, **settings)
    client = Client(second)
    assert client.search("rude pricing answer", top_k=6) == []
    progress = list(client.recall.Reindex(recall_pb2.ReindexRequest()))
    assert progress[-1].done == progress[-1].total == 6
    after = client.search("rude pricing answer", top_k=6)
    assert [fid for fid, _ in after] == [fid for fid, _ in before]
    assert [s for _, s in after] == pytest.approx([s for _, s in before], abs=1e-5)


def test_index_spans_continue_the_ingestion_trace(recall_server: Any, spans: Any) -> None:
    client = Client(recall_server)
    feedback_id = client.complain(PRICING[0])
    client.wait_indexed()
    stored = client.ingest.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=feedback_id)).feedback
    finished = spans.get_finished_spans()
    index_spans = [
        s
        for s in finished
        if s.name == "pipeline.index" and s.attributes["feedbackloop.feedback_id"] == feedback_id
    ]
    assert len(index_spans) == 1
    assert format(index_spans[0].context.trace_id, "032x") == stored.trace_id
    children = {
        s.name
        for s in finished
        if s.parent is not None and s.parent.span_id == index_spans[0].context.span_id
    }
    assert children == {"recall.embed", "milvus.upsert"}
    server_span = next(
        s
        for s in finished
        if s.name == "feedbackloop.v1.IngestionService/SubmitFeedback"
        and s.context.span_id == index_spans[0].parent.span_id
    )
    assert format(server_span.context.trace_id, "032x") == stored.trace_id


class CountingEmbedder:
    """The real model, counting how often it is called."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[int] = []

    @property
    def dimension(self) -> int:
        return int(self._inner.dimension)

    def load(self) -> CountingEmbedder:
        return self

    def encode(self, texts: list[str]) -> Any:
        self.calls.append(len(texts))
        return self._inner.encode(texts)


def test_the_index_stage_calls_the_model_once_per_batch(
    make_server: Callable[..., Any], embedder: Any
) -> None:
    counting = CountingEmbedder(embedder)
    server = make_server(embedder=counting, pipeline_enabled=False, embedding_batch_size=8)
    client = Client(server)
    for text in PRICING + TONE + PRICING[:2]:  # 8 events
        client.complain(text)
    app = server.app
    jobs = app.queue.claim("index", app.index_stage.batch_size)
    outcomes = app.index_stage.process(jobs)
    assert len(jobs) == 8 and all(error is None for error in outcomes.values())
    # One call for the batch: the 8 feedback texts and their distinct questions.
    assert len(counting.calls) == 1 and counting.calls[0] > 8


def test_search_by_feedback_links_to_the_feedbacks_own_trace(recall_server: Any, spans: Any) -> None:
    client = Client(recall_server)
    feedback_id = client.complain(PRICING[0])
    client.wait_indexed()
    stored = client.ingest.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=feedback_id)).feedback
    spans.clear()
    client.recall.SearchSimilar(recall_pb2.SearchSimilarRequest(feedback_id=feedback_id))
    fetch = [s for s in spans.get_finished_spans() if s.name == "milvus.fetch_vector"]
    assert len(fetch) == 1
    (link,) = fetch[0].links
    assert format(link.context.trace_id, "032x") == stored.trace_id
    assert link.attributes["feedbackloop.feedback_id"] == feedback_id


def test_a_filter_value_milvus_cannot_take_is_invalid_argument(recall_server: Any) -> None:
    stub = recall_server.stub(recall_pb2_grpc.RecallServiceStub)
    request = recall_pb2.SearchSimilarRequest(
        text="x", filter=common_pb2.FeedbackFilter(model_versions=["a\x01b"])
    )
    assert code_of(lambda: stub.SearchSimilar(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "filter.model_versions[0]: must not contain control characters (U+0001 at position 1)",
    )
