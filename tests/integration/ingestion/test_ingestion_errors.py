"""Every bad input gets its exact code and a message naming the field, and stores nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from ingestion_support import bad_request, counts, record, submit

from feedbackloop.ingestion.taxonomy import DEFAULT_CATEGORIES
from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from support import code_of, ts

S = common_pb2
I = ingestion_pb2  # noqa: E741
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TAXONOMY = ", ".join(sorted(DEFAULT_CATEGORIES))
NO_SIGNAL = (
    "carries no signal: set at least one of thumb, rating, categories, comment, correction, implicit_signal"
)


@dataclass
class Ctx:
    """What a case may refer to: a recorded interaction in session s-1, and a real page token."""

    interaction_id: str
    token: str


@dataclass
class Case:
    name: str
    method: str
    request: Callable[[Ctx], Any]
    code: grpc.StatusCode
    message: str | Callable[[Ctx], str]
    # Expected BadRequest violations; None means "one violation, equal to the message".
    violations: list[tuple[str, str]] | None = field(default=None)


def fb(**fields: Any) -> Callable[[Ctx], Any]:
    return lambda ctx: I.SubmitFeedbackRequest(feedback=S.Feedback(**fields))


def fb_on(**fields: Any) -> Callable[[Ctx], Any]:
    return lambda ctx: I.SubmitFeedbackRequest(
        feedback=S.Feedback(interaction_id=ctx.interaction_id, **fields)
    )


def split(message: str) -> list[tuple[str, str]]:
    path, _, description = message.partition(": ")
    return [(path, description)]


CASES: list[Case] = [
    # --- SubmitFeedback: targets ---
    Case(
        "no target",
        "SubmitFeedback",
        fb(thumb=S.THUMB_UP),
        INVALID,
        "feedback.session_id: is required when interaction_id is empty",
    ),
    Case(
        "feedback missing",
        "SubmitFeedback",
        lambda ctx: I.SubmitFeedbackRequest(),
        INVALID,
        "feedback: is required",
    ),
    Case(
        "unknown interaction",
        "SubmitFeedback",
        fb(interaction_id="int_nope", thumb=S.THUMB_UP),
        NOT_FOUND,
        "feedback.interaction_id: no interaction 'int_nope' in this project",
    ),
    Case(
        "unknown session",
        "SubmitFeedback",
        fb(session_id="s-nope", thumb=S.THUMB_UP),
        NOT_FOUND,
        "feedback.session_id: no session 's-nope' in this project",
    ),
    Case(
        "session/interaction mismatch",
        "SubmitFeedback",
        lambda ctx: I.SubmitFeedbackRequest(
            feedback=S.Feedback(interaction_id=ctx.interaction_id, session_id="s-2", thumb=S.THUMB_UP)
        ),
        INVALID,
        lambda ctx: (
            f"feedback.session_id: interaction '{ctx.interaction_id}' belongs to session 's-1', not 's-2'"
        ),
    ),
    # --- SubmitFeedback: signals ---
    Case(
        "unknown category",
        "SubmitFeedback",
        fb_on(categories=["hallucination", "bogus"]),
        INVALID,
        f"feedback.categories[1]: unknown category 'bogus' (the taxonomy in force has: {TAXONOMY})",
    ),
    Case(
        "duplicate category",
        "SubmitFeedback",
        fb_on(categories=["unsafe", "unsafe"]),
        INVALID,
        "feedback.categories[1]: duplicate category 'unsafe'",
    ),
    Case("empty feedback", "SubmitFeedback", fb_on(), INVALID, f"feedback: {NO_SIGNAL}"),
    Case(
        "whitespace comment is no signal",
        "SubmitFeedback",
        fb_on(comment="   "),
        INVALID,
        f"feedback: {NO_SIGNAL}",
    ),
    Case(
        "rating 0",
        "SubmitFeedback",
        fb_on(rating=0),
        INVALID,
        "feedback.rating: must be between 1 and 5 (got 0)",
    ),
    Case(
        "rating 6",
        "SubmitFeedback",
        fb_on(rating=6),
        INVALID,
        "feedback.rating: must be between 1 and 5 (got 6)",
    ),
    Case(
        "confidence above 1",
        "SubmitFeedback",
        fb_on(thumb=S.THUMB_UP, model_confidence=1.5),
        INVALID,
        "feedback.model_confidence: must be between 0 and 1 (got 1.5)",
    ),
    Case(
        "confidence below 0",
        "SubmitFeedback",
        fb_on(thumb=S.THUMB_UP, model_confidence=-0.01),
        INVALID,
        "feedback.model_confidence: must be between 0 and 1 (got -0.01)",
    ),
    Case(
        "confidence NaN",
        "SubmitFeedback",
        fb_on(thumb=S.THUMB_UP, model_confidence=float("nan")),
        INVALID,
        "feedback.model_confidence: must be between 0 and 1 (got nan)",
    ),
    Case(
        "unknown thumb",
        "SubmitFeedback",
        fb_on(thumb=7, comment="x"),
        INVALID,
        "feedback.thumb: unknown value 7",
    ),
    Case(
        "EDIT without implicit_text",
        "SubmitFeedback",
        fb_on(implicit_signal=S.IMPLICIT_SIGNAL_EDIT),
        INVALID,
        "feedback.implicit_text: is required for implicit signal 'edit'",
    ),
    Case(
        "REPHRASE with blank implicit_text",
        "SubmitFeedback",
        fb_on(implicit_signal=S.IMPLICIT_SIGNAL_REPHRASE, implicit_text="  "),
        INVALID,
        "feedback.implicit_text: is required for implicit signal 'rephrase'",
    ),
    Case(
        "implicit_text with COPY",
        "SubmitFeedback",
        fb_on(implicit_signal=S.IMPLICIT_SIGNAL_COPY, implicit_text="copied"),
        INVALID,
        "feedback.implicit_text: is only allowed with implicit_signal EDIT or REPHRASE",
    ),
    # --- SubmitFeedback: timestamps ---
    Case(
        "feedback in the future",
        "SubmitFeedback",
        fb_on(thumb=S.THUMB_UP, occurred_at=ts(datetime(2100, 1, 1, tzinfo=UTC))),
        INVALID,
        "feedback.occurred_at: is 2100-01-01T00:00:00+00:00, more than 300s in the future",
    ),
    Case(
        "feedback before 2000",
        "SubmitFeedback",
        fb_on(thumb=S.THUMB_UP, occurred_at=ts(datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC))),
        INVALID,
        "feedback.occurred_at: is 1999-12-31T23:59:59+00:00, before 2000-01-01",
    ),
    Case(
        "epoch zero (seconds taken for milliseconds)",
        "SubmitFeedback",
        fb_on(thumb=S.THUMB_UP, occurred_at=ts(datetime(1970, 1, 1, tzinfo=UTC))),
        INVALID,
        "feedback.occurred_at: is 1970-01-01T00:00:00+00:00, before 2000-01-01",
    ),
    Case(
        "every problem at once",
        "SubmitFeedback",
        fb_on(rating=9, model_confidence=2.0, categories=["nope"]),
        INVALID,
        "feedback.rating: must be between 1 and 5 (got 9); "
        f"feedback.categories[0]: unknown category 'nope' (the taxonomy in force has: {TAXONOMY}); "
        "feedback.model_confidence: must be between 0 and 1 (got 2.0)",
        [
            ("feedback.rating", "must be between 1 and 5 (got 9)"),
            ("feedback.categories[0]", f"unknown category 'nope' (the taxonomy in force has: {TAXONOMY})"),
            ("feedback.model_confidence", "must be between 0 and 1 (got 2.0)"),
        ],
    ),
    # --- RecordInteraction ---
    Case(
        "interaction missing",
        "RecordInteraction",
        lambda ctx: I.RecordInteractionRequest(),
        INVALID,
        "interaction: is required",
    ),
    Case(
        "interaction without session",
        "RecordInteraction",
        lambda ctx: I.RecordInteractionRequest(interaction=S.Interaction(turn_index=0, response="x")),
        INVALID,
        "interaction.session_id: is required",
    ),
    Case(
        "interaction bad role and negative turn",
        "RecordInteraction",
        lambda ctx: I.RecordInteractionRequest(
            interaction=S.Interaction(
                session_id="s-9", turn_index=-1, input_messages=[S.ChatMessage(role="bot", content="hi")]
            )
        ),
        INVALID,
        "interaction.turn_index: must not be negative (got -1); "
        "interaction.input_messages[0].role: must be one of assistant, system, tool, user",
        [
            ("interaction.turn_index", "must not be negative (got -1)"),
            ("interaction.input_messages[0].role", "must be one of assistant, system, tool, user"),
        ],
    ),
    Case(
        "interaction in the future",
        "RecordInteraction",
        lambda ctx: I.RecordInteractionRequest(
            interaction=S.Interaction(session_id="s-9", occurred_at=ts(datetime(2999, 1, 1, tzinfo=UTC)))
        ),
        INVALID,
        "interaction.occurred_at: is 2999-01-01T00:00:00+00:00, more than 300s in the future",
    ),
    Case(
        "interaction before 2000",
        "RecordInteraction",
        lambda ctx: I.RecordInteractionRequest(
            interaction=S.Interaction(session_id="s-9", occurred_at=ts(datetime(1999, 6, 1, tzinfo=UTC)))
        ),
        INVALID,
        "interaction.occurred_at: is 1999-06-01T00:00:00+00:00, before 2000-01-01",
    ),
    # --- reads ---
    Case(
        "GetFeedback unknown id",
        "GetFeedback",
        lambda ctx: I.GetFeedbackRequest(feedback_id="fb_nope"),
        NOT_FOUND,
        "feedback_id: no feedback 'fb_nope' in this project",
    ),
    Case(
        "GetFeedback empty id",
        "GetFeedback",
        lambda ctx: I.GetFeedbackRequest(),
        INVALID,
        "feedback_id: is required",
    ),
    Case(
        "GetSession unknown",
        "GetSession",
        lambda ctx: I.GetSessionRequest(session_id="s-nope"),
        NOT_FOUND,
        "session_id: no session 's-nope' in this project",
    ),
    Case(
        "malformed page token",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(page_token="not-a-token!"),
        INVALID,
        "page_token: is malformed; pass next_page_token unchanged",
    ),
    Case(
        "base64 of something else",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(page_token="eyJ0IjoxfQ"),  # {"t":1}
        INVALID,
        "page_token: is malformed; pass next_page_token unchanged",
    ),
    Case(
        "token reused with another filter",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(
            filter=S.FeedbackFilter(signals=[S.SIGNAL_THUMBS_DOWN]), page_size=1, page_token=ctx.token
        ),
        INVALID,
        "page_token: was issued for a different filter",
    ),
    Case(
        "page size over max",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(page_size=501),
        INVALID,
        "page_size: must be between 1 and 500 (got 501)",
    ),
    Case(
        "negative page size",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(page_size=-1),
        INVALID,
        "page_size: must be between 1 and 500 (got -1)",
    ),
    Case(
        "empty time range",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(
            filter=S.FeedbackFilter(
                time_range=S.TimeRange(
                    start=ts(datetime(2025, 1, 2, tzinfo=UTC)), end=ts(datetime(2025, 1, 1, tzinfo=UTC))
                )
            )
        ),
        INVALID,
        "filter.time_range: end must be after start",
    ),
    Case(
        "unspecified signal in filter",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(filter=S.FeedbackFilter(signals=[S.SIGNAL_UNSPECIFIED])),
        INVALID,
        "filter.signals[0]: unknown signal 0",
    ),
    Case(
        "unspecified source in filter",
        "ListFeedback",
        lambda ctx: I.ListFeedbackRequest(filter=S.FeedbackFilter(sources=[S.FEEDBACK_SOURCE_UNSPECIFIED])),
        INVALID,
        "filter.sources[0]: unknown source 0",
    ),
]


def test_bad_inputs(server, stub) -> None:  # type: ignore[no-untyped-def]
    interaction_id = record(stub, "s-1")
    for _ in range(2):
        submit(stub, interaction_id=interaction_id, thumb=S.THUMB_UP)
    token = stub.ListFeedback(I.ListFeedbackRequest(page_size=1)).next_page_token
    assert token
    ctx = Ctx(interaction_id=interaction_id, token=token)
    before = counts(server.app.db)
    listed_before = len(stub.ListFeedback(I.ListFeedbackRequest()).feedback)

    failures = []
    for case in CASES:
        message = case.message(ctx) if callable(case.message) else case.message
        expected_violations = case.violations if case.violations is not None else split(message)
        try:
            getattr(stub, case.method)(case.request(ctx))
        except grpc.RpcError as error:
            got = (error.code(), error.details(), bad_request(error))
            if got != (case.code, message, expected_violations):
                failures.append(
                    f"{case.name}:\n  got  {got}\n  want {(case.code, message, expected_violations)}"
                )
        else:
            failures.append(f"{case.name}: the call succeeded")
        if counts(server.app.db) != before:
            failures.append(f"{case.name}: stored something: {counts(server.app.db)} != {before}")
    assert not failures, "\n".join(failures)
    assert len(stub.ListFeedback(I.ListFeedbackRequest()).feedback) == listed_before == 2


def test_text_over_the_limit(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url, max_text_chars=50)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    interaction_id = record(stub, "s-limit")
    before = counts(server.app.db)
    cases = [
        (
            I.SubmitFeedbackRequest(feedback=S.Feedback(interaction_id=interaction_id, comment="x" * 51)),
            [("feedback.comment", "is 51 characters long; the limit is 50")],
        ),
        (
            I.SubmitFeedbackRequest(
                feedback=S.Feedback(interaction_id=interaction_id, thumb=S.THUMB_DOWN, correction="y" * 80)
            ),
            [("feedback.correction", "is 80 characters long; the limit is 50")],
        ),
        (
            I.SubmitFeedbackRequest(
                feedback=S.Feedback(
                    interaction_id=interaction_id, thumb=S.THUMB_UP, attributes={"note": "z" * 51}
                )
            ),
            [("feedback.attributes['note']", "value is 51 characters long; the limit is 50")],
        ),
        (
            I.RecordInteractionRequest(
                interaction=S.Interaction(session_id="s-limit", turn_index=1, response="r" * 60)
            ),
            [("interaction.response", "is 60 characters long; the limit is 50")],
        ),
    ]
    for request, violations in cases:
        method = (
            stub.SubmitFeedback if isinstance(request, I.SubmitFeedbackRequest) else stub.RecordInteraction
        )
        try:
            method(request)
        except grpc.RpcError as error:
            assert error.code() == INVALID
            assert error.details() == "; ".join(f"{f}: {d}" for f, d in violations)
            assert bad_request(error) == violations
        else:
            raise AssertionError(f"accepted {request}")
    assert counts(server.app.db) == before
    # Exactly at the limit is fine.
    assert submit(stub, interaction_id=interaction_id, comment="x" * 50).created


def test_oversize_message_is_refused_by_the_server_limit(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url=store_url, max_message_bytes=64 * 1024)
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    before = counts(server.app.db)
    request = I.RecordInteractionRequest(
        interaction=S.Interaction(session_id="s-big", turn_index=0, response="x" * 100_000)
    )
    # "SERVER:" shows it is the server's limit that refused it, not the client's.
    assert code_of(lambda: stub.RecordInteraction(request)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"SERVER: Received message larger than max ({request.ByteSize()} vs. 65536)",
    )
    assert counts(server.app.db) == before
    # The same server still takes ordinary requests.
    assert record(stub, "s-small") != ""


def test_oversize_response_is_refused_by_the_server_limit(make_server, store_url) -> None:  # type: ignore[no-untyped-def]
    # A 100 KB response recorded through a server with the default limit...
    roomy = make_server(database_url=store_url, max_text_chars=200_000).stub(
        ingestion_pb2_grpc.IngestionServiceStub
    )
    record_request = I.RecordInteractionRequest(
        interaction=S.Interaction(session_id="s-big", turn_index=0, response="x" * 100_000)
    )
    roomy.RecordInteraction(record_request)
    # ...cannot be sent back by a server limited to 64 KiB.
    tight = make_server(database_url=store_url, max_message_bytes=64 * 1024)
    stub = tight.stub(ingestion_pb2_grpc.IngestionServiceStub)
    code, details = code_of(lambda: stub.GetSession(I.GetSessionRequest(session_id="s-big")))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith("SERVER: Sent message larger than max ("), details
