"""Record an interaction, give feedback, read both back: the basic promise of the service."""

from __future__ import annotations

from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc


def test_feedback_round_trip(server) -> None:  # type: ignore[no-untyped-def]
    stub = server.stub(ingestion_pb2_grpc.IngestionServiceStub)
    recorded = stub.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(
                session_id="s-1",
                turn_index=0,
                response="Our plan costs $10.",
                input_messages=[common_pb2.ChatMessage(role="user", content="How much is the plan?")],
            )
        )
    )
    ack = stub.SubmitFeedback(
        ingestion_pb2.SubmitFeedbackRequest(
            feedback=common_pb2.Feedback(
                interaction_id=recorded.interaction_id,
                thumb=common_pb2.THUMB_DOWN,
                categories=["outdated_info"],
                correction="It costs $12 since March.",
            )
        )
    )
    session = stub.GetSession(ingestion_pb2.GetSessionRequest(session_id="s-1"))
    assert [t.interaction.id for t in session.turns] == [recorded.interaction_id]
    (stored,) = session.turns[0].feedback
    assert stored.id == ack.feedback_id
    assert stored.correction == "It costs $12 since March."
    assert list(stored.categories) == ["outdated_info"]
    assert stored.trace_id == ack.trace_id != ""
