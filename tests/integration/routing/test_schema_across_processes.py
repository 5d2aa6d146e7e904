"""A server that only ingests validates against a FeedbackSchema another server applied."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from routing_support import policy_files

from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc, routing_pb2, routing_pb2_grpc
from support import code_of

SCHEMA = (
    "apiVersion: feedbackloop/v1\nkind: FeedbackSchema\nmetadata:\n  name: s\nspec:\n  signals:\n"
    "    thumbs_down:\n      categories:\n        - name: pricing_error\n"
)


def test_an_ingest_only_server_follows_a_schema_applied_by_another(
    make_server: Callable[..., Any], store_url: str
) -> None:
    admin = make_server(database_url=store_url)
    ingest_only = make_server(database_url=store_url, schema_refresh_seconds=0.2)
    stub = ingestion_pb2_grpc.IngestionServiceStub(ingest_only.channel)
    session = "s-schema"
    interaction = stub.RecordInteraction(
        ingestion_pb2.RecordInteractionRequest(
            interaction=common_pb2.Interaction(session_id=session, turn_index=0, response="It costs $10.")
        )
    ).interaction_id

    def submit(category: str) -> Any:
        return stub.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(
                feedback=common_pb2.Feedback(
                    session_id=session,
                    interaction_id=interaction,
                    thumb=common_pb2.THUMB_DOWN,
                    categories=[category],
                )
            )
        )

    code, details = code_of(lambda: submit("pricing_error"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown category 'pricing_error'" in details
    assert submit("hallucination").created  # a built-in default category, before the apply

    routing_pb2_grpc.RoutingServiceStub(admin.channel).ApplyPolicies(
        routing_pb2.ApplyPoliciesRequest(files=policy_files(schema=SCHEMA))
    )

    def accepted(category: str) -> bool:
        try:
            return bool(submit(category).created)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
            return False

    deadline = time.monotonic() + 10
    while not accepted("pricing_error"):
        assert time.monotonic() < deadline, "the ingest-only server never saw the applied schema"
        time.sleep(0.05)
    code, details = code_of(lambda: submit("hallucination"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown category 'hallucination'" in details
