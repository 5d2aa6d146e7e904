"""Hostile values in every service: each gets its exact code and a message naming the field, the
message stays short whatever was sent, and nothing stored changes.

Each case is a value the store, the index or Python could not take (a timestamp outside
protobuf's range, a number past a column's, a NUL that PostgreSQL text cannot hold, an id of
100,000 characters), or a name of something that does not exist.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hostile_support import DATASET, PROMPT, QUEUE, SESSION, Loaded, row_counts, start_loaded

from feedbackloop.paging import filter_digest
from feedbackloop.v1 import (
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    prompts_pb2,
    prompts_pb2_grpc,
    recall_pb2,
    recall_pb2_grpc,
    reviews_pb2,
    reviews_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)

S = common_pb2
I = ingestion_pb2  # noqa: E741
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
HUGE = "x" * 100_000
TS_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z"
TEXT_LIMIT = 2_000
STUBS = {
    "ingest": ingestion_pb2_grpc.IngestionServiceStub,
    "recall": recall_pb2_grpc.RecallServiceStub,
    "routing": routing_pb2_grpc.RoutingServiceStub,
    "prompts": prompts_pb2_grpc.PromptServiceStub,
    "datasets": datasets_pb2_grpc.DatasetServiceStub,
    "reviews": reviews_pb2_grpc.ReviewServiceStub,
}


def window(start: int, end: int, start_nanos: int = 0) -> S.TimeRange:
    return S.TimeRange(start={"seconds": start, "nanos": start_nanos}, end={"seconds": end})


def forged_token(request: Any, values: list[Any]) -> str:
    """A page token for `request`'s filter carrying sort values no stored row can have."""
    payload = {"k": values, "f": filter_digest(request)}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@dataclass
class Case:
    name: str
    service: str
    method: str
    request: Callable[[Loaded], Any]
    code: grpc.StatusCode
    message: str


CASES = [
    # --- timestamps and windows ---
    Case(
        "ListFeedback start before year 1",
        "ingest",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(filter=S.FeedbackFilter(time_range=window(-62_135_596_801, 0))),
        INVALID,
        f"filter.time_range.start: is outside the Timestamp range {TS_RANGE} (seconds=-62135596801)",
    ),
    Case(
        "ListFeedback end after 9999",
        "ingest",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(filter=S.FeedbackFilter(time_range=window(0, 2**62))),
        INVALID,
        f"filter.time_range.end: is outside the Timestamp range {TS_RANGE} (seconds={2**62})",
    ),
    Case(
        "ListFeedback negative nanos",
        "ingest",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(filter=S.FeedbackFilter(time_range=window(0, 10, -1))),
        INVALID,
        "filter.time_range.start: nanos must be between 0 and 999999999 (got -1)",
    ),
    Case(
        "TopIssues start out of range",
        "recall",
        "TopIssues",
        lambda ctx: recall_pb2.TopIssuesRequest(time_range=window(-(2**63), 1_700_000_000)),
        INVALID,
        f"time_range.start: is outside the Timestamp range {TS_RANGE} (seconds={-(2**63)})",
    ),
    Case(
        "TopIssues previous window before year 1",
        "recall",
        "TopIssues",
        lambda ctx: recall_pb2.TopIssuesRequest(time_range=window(-62_135_596_000, 253_402_300_799)),
        INVALID,
        "time_range: the previous window of the same length would start before 0001-01-01; "
        "use a shorter or later window",
    ),
    Case(
        "SearchSimilar filter out of range",
        "recall",
        "SearchSimilar",
        lambda ctx: recall_pb2.SearchSimilarRequest(
            text="price", filter=S.FeedbackFilter(time_range=window(253_402_300_800, 253_402_300_801))
        ),
        INVALID,
        f"filter.time_range.start: is outside the Timestamp range {TS_RANGE} (seconds=253402300800); "
        f"filter.time_range.end: is outside the Timestamp range {TS_RANGE} (seconds=253402300801)",
    ),
    Case(
        "PlanPolicies window past Duration's range",
        "routing",
        "PlanPolicies",
        lambda ctx: routing_pb2.PlanPoliciesRequest(backtest_window={"seconds": 2**62}),
        INVALID,
        f"backtest_window: is outside the Duration range of +-315576000000s (seconds={2**62})",
    ),
    # --- integer labels and numbers past a column ---
    Case(
        "GetPrompt label past any version",
        "prompts",
        "GetPrompt",
        lambda ctx: prompts_pb2.GetPromptRequest(name=PROMPT, label="99999999999999999999"),
        INVALID,
        'label: must be "production", "latest" or a version number from 1 to 2147483647 '
        '(got "99999999999999999999")',
    ),
    Case(
        "GetPrompt label a superscript digit",
        "prompts",
        "GetPrompt",
        lambda ctx: prompts_pb2.GetPromptRequest(name=PROMPT, label="²"),
        INVALID,
        'label: must be "production", "latest" or a version number from 1 to 2147483647 (got "²")',
    ),
    Case(
        "GetRevision past 32 bits",
        "routing",
        "GetRevision",
        lambda ctx: routing_pb2.GetRevisionRequest(revision=2**63 - 1),
        INVALID,
        f"revision: must be at most 2147483647 (got {2**63 - 1})",
    ),
    Case(
        "page token with a number past 64 bits",
        "reviews",
        "ListReviewItems",
        lambda ctx: reviews_pb2.ListReviewItemsRequest(
            page_token=forged_token(
                reviews_pb2.ListReviewItemsRequest(),
                [10**30, {"dt": "2025-01-01T00:00:00+00:00"}, {"dt": "2025-01-01T00:00:00+00:00"}, "r"],
            )
        ),
        INVALID,
        "page_token: is malformed; pass next_page_token unchanged",
    ),
    Case(
        "page token with a string for a time",
        "datasets",
        "ListItems",
        lambda ctx: datasets_pb2.ListItemsRequest(
            dataset=DATASET,
            page_token=forged_token(datasets_pb2.ListItemsRequest(dataset=DATASET), ["yesterday", "di_1"]),
        ),
        INVALID,
        "page_token: is malformed; pass next_page_token unchanged",
    ),
    # --- NUL and control characters in ids and names ---
    Case(
        "NUL in an interaction's session_id",
        "ingest",
        "RecordInteraction",
        lambda ctx: I.RecordInteractionRequest(
            interaction=S.Interaction(session_id="s\x00x", response="r", turn_index=9)
        ),
        INVALID,
        "interaction.session_id: must not contain control characters (U+0000 at position 1)",
    ),
    Case(
        "NUL in a feedback's session_id",
        "ingest",
        "SubmitFeedback",
        lambda ctx: I.SubmitFeedbackRequest(feedback=S.Feedback(session_id="\x00", thumb=S.THUMB_UP)),
        INVALID,
        "feedback.session_id: must not contain control characters (U+0000 at position 0)",
    ),
    Case(
        "NUL in a comment",
        "ingest",
        "SubmitFeedback",
        lambda ctx: I.SubmitFeedbackRequest(
            feedback=S.Feedback(interaction_id=ctx.interaction_id, comment="bad\x00")
        ),
        INVALID,
        "feedback.comment: must not contain NUL characters (U+0000 at position 3)",
    ),
    Case(
        "NUL inside model parameters",
        "ingest",
        "RecordInteraction",
        lambda ctx: I.RecordInteractionRequest(
            interaction=S.Interaction(
                session_id=SESSION,
                turn_index=9,
                response="r",
                model=S.ModelRef(parameters={"stop": ["\x00"]}),
            )
        ),
        INVALID,
        "interaction.model.parameters.fields['stop'].list_value.values[0].string_value: "
        "must not contain NUL characters (U+0000)",
    ),
    Case(
        "NaN in model parameters",
        "ingest",
        "RecordInteraction",
        lambda ctx: I.RecordInteractionRequest(
            interaction=S.Interaction(
                session_id=SESSION,
                turn_index=9,
                response="r",
                model=S.ModelRef(parameters={"temperature": float("nan")}),
            )
        ),
        INVALID,
        "interaction.model.parameters: numbers must be finite (no NaN or infinity)",
    ),
    Case(
        "role past its 64-wide column",
        "ingest",
        "SubmitFeedback",
        lambda ctx: I.SubmitFeedbackRequest(
            feedback=S.Feedback(
                interaction_id=ctx.interaction_id, thumb=S.THUMB_UP, user=S.User(role="r" * 65)
            )
        ),
        INVALID,
        "feedback.user.role: is 65 characters long; the limit is 64",
    ),
    Case(
        "NUL in GetSession's session_id",
        "ingest",
        "GetSession",
        lambda ctx: I.GetSessionRequest(session_id="a\x00"),
        INVALID,
        "session_id: must not contain control characters (U+0000 at position 1)",
    ),
    Case(
        "control character in a filter category",
        "ingest",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(filter=S.FeedbackFilter(categories=["un\x07safe"])),
        INVALID,
        "filter.categories[0]: must not contain control characters (U+0007 at position 2)",
    ),
    Case(
        "too many filter values",
        "ingest",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(filter=S.FeedbackFilter(model_versions=["v"] * 40_000)),
        INVALID,
        "filter.model_versions: has 40000 values; the limit is 256",
    ),
    Case(
        "NUL in a dataset name",
        "datasets",
        "ListItems",
        lambda ctx: datasets_pb2.ListItemsRequest(dataset="d\x00"),
        INVALID,
        "dataset: must not contain control characters (U+0000 at position 1)",
    ),
    # --- lengths: ids past their limit, and errors that would echo them ---
    Case(
        "100,000-character feedback id",
        "ingest",
        "GetFeedback",
        lambda ctx: I.GetFeedbackRequest(feedback_id=HUGE),
        INVALID,
        "feedback_id: is 100000 characters long; the limit is 128",
    ),
    Case(
        "100,000-character feedback id to Explain",
        "routing",
        "Explain",
        lambda ctx: routing_pb2.ExplainRequest(feedback_id=HUGE),
        INVALID,
        "feedback_id: is 100000 characters long; the limit is 128",
    ),
    Case(
        "100,000-character category is not echoed whole",
        "ingest",
        "SubmitFeedback",
        lambda ctx: I.SubmitFeedbackRequest(
            feedback=S.Feedback(interaction_id=ctx.interaction_id, categories=["c" * 100])
        ),
        INVALID,
        f"feedback.categories[0]: unknown category '{'c' * 80}… (100 characters)' "
        "(the taxonomy in force has: accurate, clear, formatting, hallucination, outdated_info, unhelpful, "
        "unsafe, wrong_tone)",
    ),
    Case(
        "SearchSimilar text past the text limit",
        "recall",
        "SearchSimilar",
        lambda ctx: recall_pb2.SearchSimilarRequest(text="word " * 1_000),
        INVALID,
        f"text: is 5000 characters long; the limit is {TEXT_LIMIT}",
    ),
    Case(
        "100,000-character reviewer name",
        "reviews",
        "ClaimReviewItem",
        lambda ctx: reviews_pb2.ClaimReviewItemRequest(queue=QUEUE, reviewer=HUGE),
        INVALID,
        "reviewer: is 100000 characters long; the limit is 128",
    ),
    Case(
        "out-of-range review status",
        "reviews",
        "ListReviewItems",
        lambda ctx: reviews_pb2.ListReviewItemsRequest(status=7),  # type: ignore[arg-type]
        INVALID,
        "status: must be REVIEW_ITEM_STATUS_OPEN or REVIEW_ITEM_STATUS_DONE (got 7)",
    ),
    # --- unknown resources ---
    Case(
        "ListItems on an unknown dataset",
        "datasets",
        "ListItems",
        lambda ctx: datasets_pb2.ListItemsRequest(dataset="support-correctionz"),
        NOT_FOUND,
        'dataset: no dataset "support-correctionz" in this project '
        "(the live policy set declares: support-corrections)",
    ),
    Case(
        "ExportDataset on an unknown dataset",
        "datasets",
        "ExportDataset",
        lambda ctx: datasets_pb2.ExportDatasetRequest(dataset="nope"),
        NOT_FOUND,
        'dataset: no dataset "nope" in this project (the live policy set declares: support-corrections)',
    ),
    Case(
        "ClaimReviewItem on an unknown queue",
        "reviews",
        "ClaimReviewItem",
        lambda ctx: reviews_pb2.ClaimReviewItemRequest(queue="moderatorz"),
        NOT_FOUND,
        'queue: no review queue "moderatorz" in this project '
        "(the live policy set declares: quality-review, safety-review)",
    ),
]


@pytest.fixture
def loaded(store_url: str, tmp_path: Path) -> Any:
    ctx = start_loaded(store_url, tmp_path / "data", max_text_chars=TEXT_LIMIT)
    yield ctx
    ctx.channel.close()
    ctx.app.stop(grace=1.0)


def invoke(ctx: Loaded, case: Case) -> Any:
    method = getattr(ctx.stub(STUBS[case.service]), case.method)
    reply = method(case.request(ctx))
    return list(reply) if case.method == "ExportDataset" else reply


def test_hostile_values_are_refused_by_name(loaded: Loaded) -> None:
    before = row_counts(loaded.db)
    failures = []
    for case in CASES:
        try:
            invoke(loaded, case)
        except grpc.RpcError as error:
            got = (error.code(), error.details())
            if got != (case.code, case.message):
                failures.append(f"{case.name}:\n  got  {got}\n  want {(case.code, case.message)}")
        else:
            failures.append(f"{case.name}: the call succeeded")
        if row_counts(loaded.db) != before:
            failures.append(f"{case.name}: stored something")
    assert not failures, "\n".join(failures)


def test_known_but_empty_resources_answer_empty(loaded: Loaded) -> None:
    """NOT_FOUND is for names nobody declared: a declared dataset or queue with nothing in it
    still answers an empty OK."""
    datasets = loaded.stub(datasets_pb2_grpc.DatasetServiceStub)
    reviews = loaded.stub(reviews_pb2_grpc.ReviewServiceStub)
    assert list(datasets.ListItems(datasets_pb2.ListItemsRequest(dataset=DATASET)).items) == []
    assert list(datasets.ExportDataset(datasets_pb2.ExportDatasetRequest(dataset=DATASET))) == []
    claim = reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue=QUEUE))
    assert not claim.HasField("item") and claim.claim_id == ""


def test_errors_quote_at_most_a_short_prefix(loaded: Loaded) -> None:
    """Whatever a request carries, the status fits gRPC's trailer limit: a huge project name is
    refused as PERMISSION_DENIED (not RESOURCE_EXHAUSTED), quoting only its start."""
    ingest = loaded.stub(ingestion_pb2_grpc.IngestionServiceStub)
    for value in (HUGE, "é" * 50_000):
        try:
            ingest.GetFeedback(I.GetFeedbackRequest(project=value, feedback_id="fb_1"))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
            assert len(error.details().encode()) <= 1500
        else:
            raise AssertionError("a foreign project was accepted")
