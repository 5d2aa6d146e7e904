"""Fixtures for the ingestion integration tests: a stub on each backend's server."""

from __future__ import annotations

from typing import Any

import pytest

from feedbackloop.v1 import ingestion_pb2_grpc


@pytest.fixture
def stub(server: Any) -> Any:
    return server.stub(ingestion_pb2_grpc.IngestionServiceStub)
