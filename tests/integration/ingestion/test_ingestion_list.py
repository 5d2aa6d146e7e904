"""ListFeedback: each filter, AND/OR semantics, newest-first order, paging with tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ingestion_support import list_all, record, submit
from sqlalchemy import update

from feedbackloop.store.db import Database
from feedbackloop.store.models import Feedback
from feedbackloop.v1 import common_pb2, ingestion_pb2
from support import ts

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
S = common_pb2

# name -> (target, minute offset from T0, fields). Target "A"/"B" is an interaction,
# "session:<id>" is session-level feedback.
DATASET: dict[str, tuple[str, int, dict[str, Any]]] = {
    "up": ("A", 1, {"thumb": S.THUMB_UP, "user": S.User(id="u1", role="customer")}),
    "down": ("A", 2, {"thumb": S.THUMB_DOWN, "user": S.User(id="u1", role="customer")}),
    "rating": ("B", 3, {"rating": 4, "user": S.User(id="u2", role="agent")}),
    "cat": ("B", 4, {"categories": ["hallucination", "too_long"], "user": S.User(id="u2", role="agent")}),
    "comment": ("A", 5, {"comment": "nice", "source": S.FEEDBACK_SOURCE_REVIEWER}),
    "correction": ("B", 6, {"correction": "x", "source": S.FEEDBACK_SOURCE_EVALUATOR}),
    "regenerate": ("A", 7, {"implicit_signal": S.IMPLICIT_SIGNAL_REGENERATE}),
    "copy": ("B", 8, {"implicit_signal": S.IMPLICIT_SIGNAL_COPY}),
    "edit": ("A", 9, {"implicit_signal": S.IMPLICIT_SIGNAL_EDIT, "implicit_text": "fixed"}),
    "abandon": ("session:s-b", 10, {"implicit_signal": S.IMPLICIT_SIGNAL_ABANDON}),
    "rephrase": ("B", 11, {"implicit_signal": S.IMPLICIT_SIGNAL_REPHRASE, "implicit_text": "again?"}),
}
ON_A = {"up", "down", "comment", "regenerate", "edit"}
ON_B = {"rating", "cat", "correction", "copy", "rephrase"}
ALL = set(DATASET)


def _range(start: int | None, end: int | None) -> S.TimeRange:
    time_range = S.TimeRange()
    if start is not None:
        time_range.start.CopyFrom(ts(T0 + timedelta(minutes=start)))
    if end is not None:
        time_range.end.CopyFrom(ts(T0 + timedelta(minutes=end)))
    return time_range


FILTER_CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("no filter", {}, ALL),
    ("time range [3, 6)", {"time_range": _range(3, 6)}, {"rating", "cat", "comment"}),
    ("time range start only", {"time_range": _range(10, None)}, {"abandon", "rephrase"}),
    ("time range end only", {"time_range": _range(None, 2)}, {"up"}),
    ("thumbs up", {"signals": [S.SIGNAL_THUMBS_UP]}, {"up"}),
    ("thumbs down", {"signals": [S.SIGNAL_THUMBS_DOWN]}, {"down"}),
    ("rating", {"signals": [S.SIGNAL_RATING]}, {"rating"}),
    ("category", {"signals": [S.SIGNAL_CATEGORY]}, {"cat"}),
    ("comment", {"signals": [S.SIGNAL_COMMENT]}, {"comment"}),
    ("correction", {"signals": [S.SIGNAL_CORRECTION]}, {"correction"}),
    ("regenerate", {"signals": [S.SIGNAL_REGENERATE]}, {"regenerate"}),
    ("copy", {"signals": [S.SIGNAL_COPY]}, {"copy"}),
    ("edit", {"signals": [S.SIGNAL_EDIT]}, {"edit"}),
    ("abandon", {"signals": [S.SIGNAL_ABANDON]}, {"abandon"}),
    ("rephrase", {"signals": [S.SIGNAL_REPHRASE]}, {"rephrase"}),
    ("signals are OR-ed", {"signals": [S.SIGNAL_THUMBS_UP, S.SIGNAL_COPY]}, {"up", "copy"}),
    ("category too_long", {"categories": ["too_long"]}, {"cat"}),
    ("categories are OR-ed", {"categories": ["unsafe", "hallucination"]}, {"cat"}),
    ("category nobody used", {"categories": ["unsafe"]}, set()),
    ("model version v1", {"model_versions": ["v1"]}, ON_A),
    ("model version v2", {"model_versions": ["v2"]}, ON_B),
    ("model versions OR-ed", {"model_versions": ["v1", "v2"]}, ON_A | ON_B),
    ("prompt p-sales", {"prompt_names": ["p-sales"]}, ON_B),
    ("prompt p-support", {"prompt_names": ["p-support"]}, ON_A),
    ("model and prompt AND-ed", {"model_versions": ["v1"], "prompt_names": ["p-sales"]}, set()),
    ("user role agent", {"user_roles": ["agent"]}, {"rating", "cat"}),
    ("user role customer", {"user_roles": ["customer"]}, {"up", "down"}),
    ("source reviewer", {"sources": [S.FEEDBACK_SOURCE_REVIEWER]}, {"comment"}),
    ("source evaluator", {"sources": [S.FEEDBACK_SOURCE_EVALUATOR]}, {"correction"}),
    ("source end user", {"sources": [S.FEEDBACK_SOURCE_END_USER]}, ALL - {"comment", "correction"}),
    ("session s-b", {"session_id": "s-b"}, ON_B | {"abandon"}),
    ("session s-a", {"session_id": "s-a"}, ON_A),
    ("unknown session", {"session_id": "s-none"}, set()),
    (
        "signals AND model version",
        {"signals": [S.SIGNAL_THUMBS_DOWN, S.SIGNAL_COMMENT, S.SIGNAL_COPY], "model_versions": ["v1"]},
        {"down", "comment"},
    ),
    (
        "signals AND role AND time",
        {
            "signals": [S.SIGNAL_THUMBS_DOWN, S.SIGNAL_THUMBS_UP],
            "user_roles": ["customer"],
            "time_range": _range(2, 60),
        },
        {"down"},
    ),
]


def _load_dataset(stub: Any, db: Database) -> dict[str, str]:
    interactions = {
        "A": record(
            stub,
            "s-a",
            0,
            model=S.ModelRef(name="m", version="v1"),
            prompt=S.PromptRef(name="p-support", version="1"),
        ),
        "B": record(
            stub,
            "s-b",
            0,
            model=S.ModelRef(name="m", version="v2"),
            prompt=S.PromptRef(name="p-sales", version="1"),
        ),
    }
    ids: dict[str, str] = {}
    for name, (target, minute, fields) in DATASET.items():
        where = (
            {"session_id": target.removeprefix("session:")}
            if target.startswith("session:")
            else {"interaction_id": interactions[target]}
        )
        # Only ResolveReviewItem writes reviewer feedback, so that row gets its source in SQL.
        reviewer = fields.get("source") == S.FEEDBACK_SOURCE_REVIEWER
        sent = {k: v for k, v in fields.items() if not (reviewer and k == "source")}
        ack = submit(stub, occurred_at=ts(T0 + timedelta(minutes=minute)), **where, **sent)
        if reviewer:
            with db.write() as session:
                session.execute(
                    update(Feedback).where(Feedback.id == ack.feedback_id).values(source="reviewer")
                )
        ids[ack.feedback_id] = name
    return ids


def test_each_filter_selects_exactly_its_feedback(stub, db) -> None:  # type: ignore[no-untyped-def]
    names = _load_dataset(stub, db)
    failures = []
    for label, filter_fields, expected in FILTER_CASES:
        got = [names[f.id] for f in list_all(stub, **filter_fields)]
        if len(got) != len(set(got)) or set(got) != expected:
            failures.append(f"{label}: got {sorted(got)}, want {sorted(expected)}")
    assert not failures, "\n".join(failures)


def test_list_is_newest_first(stub, db) -> None:  # type: ignore[no-untyped-def]
    names = _load_dataset(stub, db)
    got = [names[f.id] for f in list_all(stub)]
    expected = sorted(DATASET, key=lambda name: DATASET[name][1], reverse=True)
    assert got == expected


def test_paging_through_all_pages(stub) -> None:  # type: ignore[no-untyped-def]
    interaction_id = record(stub, "s-pages")
    acked: list[tuple[datetime, str]] = []
    for i in range(23):
        # Groups of three share an occurred_at, so the id tie-break is exercised.
        when = T0 + timedelta(seconds=i // 3)
        ack = submit(stub, interaction_id=interaction_id, rating=1 + i % 5, occurred_at=ts(when))
        acked.append((when, ack.feedback_id))
    expected = [fid for _, fid in sorted(acked, reverse=True)]

    pages: list[list[str]] = []
    token = ""
    while True:
        page = stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(page_size=5, page_token=token))
        pages.append([f.id for f in page.feedback])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    flat = [fid for page_ids in pages for fid in page_ids]
    assert flat == expected  # no duplicates, no gaps, newest first (ties by id, descending)

    # An exact multiple of the page size ends without an empty trailing page.
    page = stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(page_size=23))
    assert len(page.feedback) == 23 and page.next_page_token == ""


def test_paging_with_a_filter_keeps_the_filter(stub) -> None:  # type: ignore[no-untyped-def]
    interaction_id = record(stub, "s-pages")
    downs = []
    for i in range(12):
        thumb = S.THUMB_DOWN if i % 2 else S.THUMB_UP
        ack = submit(
            stub, interaction_id=interaction_id, thumb=thumb, occurred_at=ts(T0 + timedelta(seconds=i))
        )
        if thumb == S.THUMB_DOWN:
            downs.append(ack.feedback_id)
    flt = S.FeedbackFilter(signals=[S.SIGNAL_THUMBS_DOWN])
    first = stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(filter=flt, page_size=4))
    second = stub.ListFeedback(
        ingestion_pb2.ListFeedbackRequest(filter=flt, page_size=4, page_token=first.next_page_token)
    )
    assert [f.id for f in first.feedback] + [f.id for f in second.feedback] == downs[::-1]
    assert second.next_page_token == ""


def test_default_page_size_applies(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    from feedbackloop.v1 import ingestion_pb2_grpc

    stub = make_server(database_url=store_url, default_page_size=3).stub(
        ingestion_pb2_grpc.IngestionServiceStub
    )
    interaction_id = record(stub, "s-default-page")
    for _ in range(4):
        submit(stub, interaction_id=interaction_id, thumb=S.THUMB_UP)
    page = stub.ListFeedback(ingestion_pb2.ListFeedbackRequest())
    assert len(page.feedback) == 3
    assert page.next_page_token != ""
