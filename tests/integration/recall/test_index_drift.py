"""A lost or emptied vector index is noticed: at start, periodically, and in `pipeline status`;
a reindex (of one project, or of every project by a deployment admin) clears it.

Real server, real model, Milvus Lite; the faults are real too (the collection dropped under a
running server, the Milvus files gone across a restart, one tenant's vectors deleted).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_recall_service import PRICING, TONE, Client, _keyed_client

from feedbackloop.cli import main
from feedbackloop.pipeline.component import PipelineComponent
from feedbackloop.recall.drift import INDEX_HEALTH_SERVICE
from feedbackloop.v1 import pipeline_pb2, recall_pb2
from support import expect_error

PIPELINE = {"pipeline_enabled": True, "embedding_batch_max_wait_ms": 20, "pipeline_poll_seconds": 0.05}


def index_status(client: Client) -> pipeline_pb2.IndexStatus:
    status = client.pipeline.GetPipelineStatus(pipeline_pb2.GetPipelineStatusRequest(project=client.project))
    return status.index


def index_health(server: Any) -> int:
    stub = server.stub(health_pb2_grpc.HealthStub)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=INDEX_HEALTH_SERVICE)).status)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


def drift_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "feedbackloop.recall.drift"]


def test_a_collection_dropped_under_a_running_server_is_reported_until_reindexed(
    make_server: Callable[..., Any], embedder: Any, caplog: pytest.LogCaptureFixture, capsys: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="feedbackloop.recall.drift")
    server = make_server(embedder=embedder, index_check_interval_seconds=0.2, **PIPELINE)
    client = Client(server)
    for text in PRICING:
        client.complain(text)
    client.wait_indexed()
    status = wait_for(lambda: (s := index_status(client)).expected == 3 and s)
    assert (status.indexed, status.missing, status.error) == (3, 0, "")
    wait_for(lambda: index_health(server) == health_pb2.HealthCheckResponse.SERVING)

    server.app.recall.index.drop()  # what a lost collection looks like to the running server

    status = index_status(client)
    assert (status.expected, status.indexed, status.missing) == (3, 0, 3)
    warning = wait_for(lambda: drift_warnings(caplog))[0]
    assert warning == (
        "project 'default': the vector index holds 0 of 3 indexed feedback (3 missing); searches and "
        "aggregates miss them until `feedbackloop recall reindex` (with a key of the project) rebuilds "
        "them from the store"
    )
    wait_for(lambda: index_health(server) == health_pb2.HealthCheckResponse.NOT_SERVING)
    # The server itself stays up: the store answers, and the index can be rebuilt while serving.
    overall = server.stub(health_pb2_grpc.HealthStub).Check(health_pb2.HealthCheckRequest())
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    connect = ("--server", server.address)
    assert main(["pipeline", "status", *connect]) == 0
    assert (
        "index: 0 of 3 expected vectors, 3 MISSING: run `feedbackloop recall reindex`"
        in capsys.readouterr().out
    )

    assert main(["recall", "reindex", "--quiet", *connect]) == 0
    assert "reindexed 3 feedback" in capsys.readouterr().out
    status = index_status(client)
    assert (status.expected, status.indexed, status.missing) == (3, 3, 0)
    wait_for(lambda: index_health(server) == health_pb2.HealthCheckResponse.SERVING)
    assert len(client.search(PRICING[0], top_k=5)) == 3
    assert main(["pipeline", "status", *connect]) == 0
    assert "index: 3 of 3 expected vectors\n" in capsys.readouterr().out


def test_milvus_files_lost_across_a_restart_are_reported_at_start(
    make_server: Callable[..., Any], embedder: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="feedbackloop.recall.drift")
    data_dir = tmp_path / "first"
    first = make_server(embedder=embedder, data_dir=data_dir, **PIPELINE)
    client = Client(first)
    for text in PRICING + TONE:
        client.complain(text)
    client.wait_indexed()
    first.close()
    assert drift_warnings(caplog) == []
    # The store survives, the Milvus Lite files do not (a new directory: Lite keeps an opened
    # file's engine alive for the process).
    survivor = tmp_path / "after-loss"
    survivor.mkdir()
    shutil.copy(data_dir / "feedbackloop.db", survivor / "feedbackloop.db")

    second = make_server(embedder=embedder, data_dir=survivor, pipeline_enabled=False)
    (warning,) = wait_for(lambda: drift_warnings(caplog))
    assert warning.startswith("project 'default': the vector index holds 0 of 6 indexed feedback (6 missing)")
    client = Client(second)
    assert index_status(client).missing == 6
    list(client.recall.Reindex(recall_pb2.ReindexRequest()))
    assert index_status(client).missing == 0


def test_only_the_project_that_lost_vectors_is_reported(
    make_server: Callable[..., Any], embedder: Any, store_url: str, db: Any
) -> None:
    from feedbackloop.auth import Scope
    from feedbackloop.store import keys

    key_a = keys.create_key(db, "tenant-a", frozenset({Scope.INGEST, Scope.READ}))
    key_b = keys.create_key(db, "tenant-b", frozenset({Scope.INGEST, Scope.READ}))
    server = make_server(
        embedder=embedder, database_url=store_url, allow_anonymous_loopback=False, **PIPELINE
    )
    a, b = _keyed_client(server, key_a), _keyed_client(server, key_b)
    a.complain(PRICING[0])
    a.complain(PRICING[1])
    lost = [b.complain(TONE[0]), b.complain(TONE[1])]
    a.wait_indexed()
    b.wait_indexed()
    (monitor,) = [c.monitor for c in server.app.components if isinstance(c, PipelineComponent)]
    assert [(s.project_id, s.expected, s.indexed) for s in monitor.check()] == [
        ("tenant-a", 2, 2),
        ("tenant-b", 2, 2),
    ]

    server.app.recall.index.delete("tenant-b", lost[:1])

    # Fewer vectors in all than expected: each project is counted, and only b is short.
    assert [(s.project_id, s.indexed, s.missing) for s in monitor.check()] == [
        ("tenant-a", 2, 0),
        ("tenant-b", 1, 1),
    ]
    assert index_status(a).missing == 0
    assert (index_status(b).indexed, index_status(b).missing) == (1, 1)


def test_reindex_of_every_project_is_for_a_deployment_admin(
    make_server: Callable[..., Any], embedder: Any, store_url: str, db: Any, capsys: Any
) -> None:
    from feedbackloop.auth import Scope
    from feedbackloop.store import keys

    tenant_admin = keys.create_key(db, "tenant-a", frozenset({Scope.ADMIN}))
    default_reader = keys.create_key(db, "default", frozenset({Scope.READ, Scope.INGEST}))
    deployment_admin = keys.create_key(db, "default", frozenset({Scope.ADMIN}))
    # A loopback server that also serves keyless requests (the default project, every scope).
    server = make_server(embedder=embedder, database_url=store_url, **PIPELINE)
    anonymous, tenant = Client(server), _keyed_client(server, tenant_admin)
    anonymous.complain(PRICING[0])
    anonymous.complain(PRICING[1])
    tenant_feedback = tenant.complain(TONE[0])
    anonymous.wait_indexed()
    tenant.wait_indexed()
    server.app.recall.index.drop()
    assert (index_status(anonymous).missing, index_status(tenant).missing) == (2, 1)

    everything = recall_pb2.ReindexRequest(all_projects=True)
    expect_error(
        lambda: list(_keyed_client(server, tenant_admin).recall.Reindex(everything)),
        grpc.StatusCode.PERMISSION_DENIED,
        "all_projects: only a deployment admin may (an API key with the 'admin' scope in the default "
        "project 'default'); this key belongs to project 'tenant-a'",
    )
    expect_error(
        lambda: list(_keyed_client(server, default_reader).recall.Reindex(everything)),
        grpc.StatusCode.PERMISSION_DENIED,
        "this API key lacks the 'admin' scope",
    )
    assert index_status(tenant).missing == 1  # nothing was rebuilt by a refused call
    expect_error(
        lambda: list(
            anonymous.recall.Reindex(recall_pb2.ReindexRequest(project="default", all_projects=True))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "project: must be empty with all_projects (it covers every project)",
    )

    progress = list(_keyed_client(server, deployment_admin).recall.Reindex(everything))
    assert (progress[-1].done, progress[-1].total) == (3, 3)
    assert {p.project for p in progress if p.project} == {"default", "tenant-a"}
    assert (index_status(anonymous).missing, index_status(tenant).missing) == (0, 0)
    assert [fid for fid, _ in tenant.search(TONE[0], top_k=3)] == [tenant_feedback]

    # The keyless loopback principal is a deployment admin too, and the CLI says what it did.
    server.app.recall.index.drop()
    assert main(["recall", "reindex", "--all-projects", "--quiet", "--server", server.address]) == 0
    assert "reindexed 3 feedback in 2 project(s)" in capsys.readouterr().out
    assert (index_status(anonymous).missing, index_status(tenant).missing) == (0, 0)


def test_an_index_that_cannot_be_opened_is_reported_as_such(
    make_server: Callable[..., Any], embedder: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="feedbackloop.recall.drift")
    data_dir = tmp_path / "first"
    first = make_server(embedder=embedder, data_dir=data_dir, **PIPELINE)
    client = Client(first)
    client.complain(PRICING[0])
    client.wait_indexed()
    first.close()
    # A real fault: the Milvus Lite file's directory is blocked by a plain file.
    blocker = tmp_path / "blocked"
    blocker.write_text("not a directory")
    second = make_server(
        embedder=embedder,
        database_url=f"sqlite:///{data_dir / 'feedbackloop.db'}",
        milvus_uri=str(blocker / "milvus.db"),
        wait_ready=False,  # never ready while Milvus is blocked
        pipeline_enabled=False,
    )
    (warning,) = wait_for(lambda: drift_warnings(caplog))
    assert warning.startswith(
        "project 'default': the vector index could not be counted: the Milvus index at "
    )
    status = index_status(Client(second))
    assert (status.expected, status.missing) == (1, 0)
    assert "is unavailable" in status.error
    wait_for(lambda: index_health(second) == health_pb2.HealthCheckResponse.NOT_SERVING)
