"""Every field of Interaction and Feedback survives the round trip; GetFeedback and GetSession."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import struct_pb2
from ingestion_support import record, submit

from feedbackloop.v1 import common_pb2, ingestion_pb2
from support import ts

OCCURRED = datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)


def full_interaction(session_id: str = "s-full", turn_index: int = 3) -> common_pb2.Interaction:
    parameters = struct_pb2.Struct()
    parameters.update(
        {"temperature": 0.2, "max_tokens": 512, "stop": ["\n\n", "END"], "json_mode": True, "seed": None}
    )
    return common_pb2.Interaction(
        session_id=session_id,
        turn_index=turn_index,
        user=common_pb2.User(id="u-42", role="customer"),
        application="support-assistant",
        prompt=common_pb2.PromptRef(name="support-answer", version="7"),
        model=common_pb2.ModelRef(name="gpt-4o", version="2024-08-06", parameters=parameters),
        input_messages=[
            common_pb2.ChatMessage(role="system", content="You are helpful."),
            common_pb2.ChatMessage(role="user", content="How much is the plan? ünïcode ✓"),
        ],
        context_documents=[
            common_pb2.ContextDocument(id="doc-1", text="Plan costs $12.", score=0.91),
            common_pb2.ContextDocument(id="doc-2", text="Old: plan costs $10.", score=0.5),
        ],
        response="Our plan costs $10.",
        latency_ms=1234,
        prompt_tokens=321,
        completion_tokens=45,
        attributes={"region": "eu", "ab_bucket": "b"},
        occurred_at=ts(OCCURRED),
    )


def full_feedback(interaction_id: str, session_id: str) -> common_pb2.Feedback:
    return common_pb2.Feedback(
        session_id=session_id,
        interaction_id=interaction_id,
        thumb=common_pb2.THUMB_DOWN,
        rating=2,
        categories=["outdated_info", "hallucination"],
        comment="The price is wrong.",
        correction="It costs $12 since March.",
        implicit_signal=common_pb2.IMPLICIT_SIGNAL_EDIT,
        implicit_text="Our plan costs $12.",
        source=common_pb2.FEEDBACK_SOURCE_EVALUATOR,  # the loopback default has `evaluate`
        user=common_pb2.User(id="judge-7", role="agent"),
        model_confidence=0.25,
        occurred_at=ts(OCCURRED + timedelta(minutes=1)),
        attributes={"ui": "web", "page": "/pricing"},
        idempotency_key="key-full-1",
    )


def assert_recent(stamp: Any) -> None:
    when = stamp.ToDatetime(tzinfo=UTC)
    assert abs(datetime.now(UTC) - when) < timedelta(seconds=30), when


def test_every_interaction_and_feedback_field_round_trips(stub) -> None:  # type: ignore[no-untyped-def]
    sent = full_interaction()
    recorded = stub.RecordInteraction(ingestion_pb2.RecordInteractionRequest(interaction=sent))
    assert recorded.created is True
    assert recorded.interaction_id.startswith("int_")
    assert len(recorded.trace_id) == 32

    feedback = full_feedback(recorded.interaction_id, sent.session_id)
    ack = stub.SubmitFeedback(ingestion_pb2.SubmitFeedbackRequest(feedback=feedback))
    assert ack.created is True
    assert ack.feedback_id.startswith("fb_")

    got = stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=ack.feedback_id))

    expected_feedback = common_pb2.Feedback()
    expected_feedback.CopyFrom(feedback)
    expected_feedback.id = ack.feedback_id
    expected_feedback.trace_id = ack.trace_id
    expected_feedback.received_at.CopyFrom(got.feedback.received_at)
    assert got.feedback == expected_feedback
    assert got.feedback.HasField("rating") and got.feedback.HasField("model_confidence")
    assert_recent(got.feedback.received_at)

    expected_interaction = common_pb2.Interaction()
    expected_interaction.CopyFrom(sent)
    expected_interaction.id = recorded.interaction_id
    expected_interaction.trace_id = recorded.trace_id
    expected_interaction.received_at.CopyFrom(got.interaction.received_at)
    assert len(got.interaction.span_id) == 16  # the recording request's server span
    expected_interaction.span_id = got.interaction.span_id
    assert got.interaction == expected_interaction
    assert_recent(got.interaction.received_at)

    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id=sent.session_id))
    assert session.session_id == sent.session_id
    (turn,) = session.turns
    assert turn.interaction == expected_interaction
    assert list(turn.feedback) == [expected_feedback]
    assert list(session.session_feedback) == []


SIGNAL_CASES = [
    ({"thumb": common_pb2.THUMB_UP}, {"thumb": common_pb2.THUMB_UP}),
    ({"thumb": common_pb2.THUMB_DOWN}, {"thumb": common_pb2.THUMB_DOWN}),
    ({"rating": 1}, {"rating": 1}),
    ({"rating": 5}, {"rating": 5}),
    ({"categories": ["unsafe"]}, {"categories": ["unsafe"]}),
    ({"comment": "thanks"}, {"comment": "thanks"}),
    ({"correction": "use v2"}, {"correction": "use v2"}),
    (
        {"implicit_signal": common_pb2.IMPLICIT_SIGNAL_REGENERATE},
        {"implicit_signal": common_pb2.IMPLICIT_SIGNAL_REGENERATE},
    ),
    (
        {"implicit_signal": common_pb2.IMPLICIT_SIGNAL_COPY},
        {"implicit_signal": common_pb2.IMPLICIT_SIGNAL_COPY},
    ),
    (
        {"implicit_signal": common_pb2.IMPLICIT_SIGNAL_EDIT, "implicit_text": "edited"},
        {"implicit_signal": common_pb2.IMPLICIT_SIGNAL_EDIT, "implicit_text": "edited"},
    ),
    (
        {"implicit_signal": common_pb2.IMPLICIT_SIGNAL_ABANDON},
        {"implicit_signal": common_pb2.IMPLICIT_SIGNAL_ABANDON},
    ),
    (
        {"implicit_signal": common_pb2.IMPLICIT_SIGNAL_REPHRASE, "implicit_text": "what is the price?"},
        {"implicit_signal": common_pb2.IMPLICIT_SIGNAL_REPHRASE, "implicit_text": "what is the price?"},
    ),
    # The server records an unset source as END_USER.
    ({"thumb": common_pb2.THUMB_UP}, {"source": common_pb2.FEEDBACK_SOURCE_END_USER}),
    (
        {"thumb": common_pb2.THUMB_UP, "source": common_pb2.FEEDBACK_SOURCE_EVALUATOR},
        {"source": common_pb2.FEEDBACK_SOURCE_EVALUATOR},
    ),
    # Presence: 0.0 is a confidence, not "unknown".
    ({"thumb": common_pb2.THUMB_UP, "model_confidence": 0.0}, {"model_confidence": 0.0}),
    ({"thumb": common_pb2.THUMB_UP, "model_confidence": 1.0}, {"model_confidence": 1.0}),
]


def test_each_signal_round_trips(stub) -> None:  # type: ignore[no-untyped-def]
    # One server for the whole table: starting one per case would dominate the suite's time.
    interaction_id = record(stub, "s-signals")
    for fields, expected in SIGNAL_CASES:
        ack = submit(stub, interaction_id=interaction_id, **fields)
        got = stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=ack.feedback_id)).feedback
        for name, value in expected.items():
            actual = getattr(got, name)
            assert (list(actual) if name == "categories" else actual) == value, (fields, name)
        assert got.HasField("rating") is ("rating" in fields), fields
        assert got.HasField("model_confidence") is ("model_confidence" in fields), fields
        # Feedback on an interaction takes the interaction's session.
        assert got.session_id == "s-signals"
        assert got.interaction_id == interaction_id


def test_session_level_feedback_has_no_interaction(stub) -> None:  # type: ignore[no-untyped-def]
    record(stub, "s-level")
    ack = submit(stub, session_id="s-level", implicit_signal=common_pb2.IMPLICIT_SIGNAL_ABANDON)
    got = stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=ack.feedback_id))
    assert got.feedback.session_id == "s-level"
    assert got.feedback.interaction_id == ""
    assert not got.HasField("interaction")
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="s-level"))
    assert [f.id for f in session.session_feedback] == [ack.feedback_id]
    assert [list(t.feedback) for t in session.turns] == [[]]


def test_defaults_for_unset_timestamps_and_empty_key(stub) -> None:  # type: ignore[no-untyped-def]
    interaction_id = record(stub, "s-defaults")
    ack = submit(stub, interaction_id=interaction_id, thumb=common_pb2.THUMB_UP)
    got = stub.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=ack.feedback_id))
    assert_recent(got.feedback.occurred_at)
    assert_recent(got.interaction.occurred_at)
    assert got.feedback.idempotency_key == ""
    assert got.feedback.occurred_at.ToDatetime() <= got.feedback.received_at.ToDatetime()


def test_get_session_orders_turns_and_feedback(stub) -> None:  # type: ignore[no-untyped-def]
    # Turns recorded out of order come back in turn_index order.
    ids = {turn: record(stub, "s-order", turn) for turn in (2, 0, 1)}
    record(stub, "s-other", 0)
    recorded_traces = {}
    for turn in (0, 1, 2):
        got = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="s-order")).turns[turn]
        recorded_traces[turn] = got.interaction.trace_id
    f_turn1_a = submit(stub, interaction_id=ids[1], thumb=common_pb2.THUMB_DOWN)
    f_session_a = submit(stub, session_id="s-order", comment="overall fine")
    f_turn1_b = submit(stub, interaction_id=ids[1], rating=3)
    f_turn2 = submit(stub, interaction_id=ids[2], implicit_signal=common_pb2.IMPLICIT_SIGNAL_COPY)
    f_session_b = submit(stub, session_id="s-order", implicit_signal=common_pb2.IMPLICIT_SIGNAL_ABANDON)

    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="s-order"))
    assert session.session_id == "s-order"
    assert [t.interaction.turn_index for t in session.turns] == [0, 1, 2]
    assert [t.interaction.id for t in session.turns] == [ids[0], ids[1], ids[2]]
    assert [[f.id for f in t.feedback] for t in session.turns] == [
        [],
        [f_turn1_a.feedback_id, f_turn1_b.feedback_id],
        [f_turn2.feedback_id],
    ]
    assert [f.id for f in session.session_feedback] == [f_session_a.feedback_id, f_session_b.feedback_id]
    # Every RPC ran in its own trace: interactions in turn order, then feedback oldest first.
    expected_traces = [recorded_traces[t] for t in (0, 1, 2)] + [
        f.trace_id for f in (f_turn1_a, f_session_a, f_turn1_b, f_turn2, f_session_b)
    ]
    assert len(set(expected_traces)) == 8
    assert list(session.trace_ids) == expected_traces


def test_get_session_dedupes_trace_ids(stub) -> None:  # type: ignore[no-untyped-def]
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    metadata = (("traceparent", traceparent),)
    stub.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(session_id="s-one-trace", turn_index=0, response="a")
        ),
        metadata=metadata,
    )
    interaction_id = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="s-one-trace")).turns[0]
    submit(stub, metadata=metadata, interaction_id=interaction_id.interaction.id, thumb=common_pb2.THUMB_UP)
    submit(stub, metadata=metadata, session_id="s-one-trace", comment="ok")
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="s-one-trace"))
    assert list(session.trace_ids) == ["0af7651916cd43dd8448eb211c80319c"]
