"""The rendered Helm chart, run for real: every container of the rendered manifests started as a
local process (`chart_runner.py`), in hook order, against a real PostgreSQL and a real Milvus
server (`distributed`), or SQLite and Milvus Lite in one process (`standalone`).

Then 5,000 feedback events go to the api replicas, one worker is killed with SIGKILL halfway,
and every acknowledged event must be stored once, embedded once and routed once; both api
replicas must see the applied policy revision; the `helm test` Pod's commands must pass.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from chart_runner import ChartRun, Pod, pod_spec
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from feedbackloop.config import Settings
from feedbackloop.recall.index import FeedbackIndex
from feedbackloop.store.db import Database
from feedbackloop.store.models import Feedback, PipelineJob
from feedbackloop.store.routing_models import DatasetItemRow, DecisionRecord, PromptPatchRow, ReviewItemRow
from feedbackloop.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    pipeline_pb2,
    pipeline_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)
from support import bearer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helm"))
from helm_support import render_values

pytestmark = pytest.mark.milvus_server

REPO = Path(__file__).resolve().parents[2]
POSTGRES_ENV = "FEEDBACKLOOP_TEST_POSTGRES_URL"
EVENTS = 5_000
STREAM = 250  # events per SubmitFeedbackStream call
SESSIONS = 20
PROJECT = "default"
ADMIN_SECRET = ("fl-feedbackloop-admin-key", "admin-key")


def example_policies() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((REPO / "policies").glob("*.yaml"))}


def common_values(collection: str) -> dict[str, Any]:
    return {
        "policies": {"files": example_policies()},
        "milvus": {"collection": collection},
        # A killed worker's jobs return when their lease ends: a short one keeps the test short.
        "server": {"settings": {"pipeline_lease_seconds": 10}},
    }


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"{POSTGRES_ENV} is not set")
    import psycopg

    base = make_url(os.environ[POSTGRES_ENV])
    name = f"fl_chart_{uuid.uuid4().hex[:12]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- running the chart ---


def run_hooks(run: ChartRun, hook: str) -> None:
    for obj in run.hooks(hook):
        if obj["kind"] in ("Job", "Pod"):
            run.run_to_completion(run.new_pod(obj), timeout=240)


def start_workloads(run: ChartRun) -> dict[str, list[Pod]]:
    """Every replica of every Deployment and StatefulSet, started together, then probed."""
    pods: dict[str, list[Pod]] = {}
    for obj in run.of_kind("Deployment") + run.of_kind("StatefulSet"):
        component = obj["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        replicas = int(obj["spec"].get("replicas", 1))
        pods[component] = [run.start_server_pod(obj, ordinal) for ordinal in range(replicas)]
    for replicas in pods.values():
        for pod in replicas:
            run.wait_probes(pod)
    return pods


def grpc_port(pod: Pod) -> int:
    (server,) = [c for c in pod_spec(pod.owner)["containers"] if c["name"] == "feedbackloop"]
    (port,) = [p for p in server["ports"] if p["name"] == "grpc"]
    return pod.port_map[int(port["containerPort"])]


# --- the load ---


class Client:
    def __init__(self, pod: Pod, key: str) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port(pod)}")
        self.metadata = bearer(key)
        self.ingest = ingestion_pb2_grpc.IngestionServiceStub(self.channel)
        self.routing = routing_pb2_grpc.RoutingServiceStub(self.channel)
        self.pipeline = pipeline_pb2_grpc.PipelineServiceStub(self.channel)

    def live_revision(self) -> int:
        response = self.routing.ListRevisions(
            routing_pb2.ListRevisionsRequest(), metadata=self.metadata, timeout=10
        )
        return int(response.live_revision)

    def accepts(self, category: str) -> bool:
        feedback = common_pb2.Feedback(
            session_id="s-0",
            thumb=common_pb2.THUMB_UP,
            categories=[category],
            idempotency_key=f"probe-{uuid.uuid4()}",
        )
        try:
            self.ingest.SubmitFeedback(
                ingestion_pb2.SubmitFeedbackRequest(feedback=feedback), metadata=self.metadata, timeout=10
            )
            return True
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
            return False


def record_sessions(client: Client) -> list[str]:
    ids = []
    for n in range(SESSIONS):
        interaction = common_pb2.Interaction(
            session_id=f"s-{n}",
            turn_index=0,
            input_messages=[common_pb2.ChatMessage(role="user", content="How much is the Pro plan?")],
            response="The Pro plan costs $10 a month.",
            prompt=common_pb2.PromptRef(name="support-answer", version="1"),
            model=common_pb2.ModelRef(name="gpt-4o", version="2024-08-06"),
        )
        response = client.ingest.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(interaction=interaction),
            metadata=client.metadata,
            timeout=10,
        )
        ids.append(response.interaction_id)
    return ids


def event(i: int, interactions: list[str]) -> common_pb2.Feedback:
    """Every routing policy of the example set gets its share: reviews, dataset items, patches."""
    fields: dict[str, Any] = {"thumb": common_pb2.THUMB_DOWN}
    kind = i % 4
    if kind == 0:
        fields.update(categories=["outdated_info"], comment=f"The Pro price is out of date (ticket {i})")
    elif kind == 1:
        fields.update(comment=f"Rude and unhelpful answer number {i}")
    elif kind == 2:
        fields.update(correction=f"Pro costs ${12 + i % 7} a month since March.")
    else:
        fields.update(categories=["unsafe"] if i % 40 == 3 else [], thumb=common_pb2.THUMB_UP)
    return common_pb2.Feedback(
        interaction_id=interactions[i % SESSIONS], idempotency_key=f"chart-{i}", **fields
    )


def send(client: Client, start: int, interactions: list[str]) -> list[str]:
    requests = [
        ingestion_pb2.SubmitFeedbackStreamRequest(feedback=event(i, interactions))
        for i in range(start, start + STREAM)
    ]
    response = client.ingest.SubmitFeedbackStream(iter(requests), metadata=client.metadata, timeout=60)
    assert response.rejected == 0, response
    assert all(ack.created for ack in response.acks)
    return [ack.feedback_id for ack in response.acks]


def routed(db: Database) -> tuple[int, int]:
    """(jobs done, jobs dead)."""
    with db.read() as session:
        rows: dict[str, int] = {
            status: count
            for status, count in session.execute(
                select(PipelineJob.status, func.count()).group_by(PipelineJob.status)
            )
        }
    return rows.get("done", 0), rows.get("dead", 0)


def wait_routed(db: Database, count: int, timeout: float = 420.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done, dead = routed(db)
        assert dead == 0, f"{dead} jobs in the dead letter"
        if done >= count:
            return
        assert time.monotonic() < deadline, f"only {done} of {count} routed after {timeout}s"
        time.sleep(1.0)


def index_past(db: Database) -> int:
    with db.read() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(PipelineJob)
                .where((PipelineJob.stage == "route") | (PipelineJob.status == "done"))
            )
            or 0
        )


# --- the checks ---


def check_once(db: Database, acked: list[str]) -> dict[str, int]:
    """Stored once, routed once (one decision record set each), no doubled action."""
    assert len(acked) == len(set(acked)) == EVENTS
    with db.read() as session:
        stored = list(
            session.scalars(
                select(Feedback.id).where(
                    Feedback.project_id == PROJECT, Feedback.idempotency_key.like("chart-%")
                )
            )
        )
        assert sorted(stored) == sorted(acked)
        jobs = Counter(session.scalars(select(PipelineJob.feedback_id)))
        assert all(jobs[fid] == 1 for fid in acked)
        revisions: dict[str, set[int]] = {}
        created: Counter[tuple[str, str]] = Counter()
        for fid, revision, actions in session.execute(
            select(DecisionRecord.feedback_id, DecisionRecord.revision, DecisionRecord.actions)
        ):
            revisions.setdefault(fid, set()).add(revision)
            for action in actions:
                if action["status"] == "created":
                    created[(action["type"], action["resource_id"])] += 1
        assert set(acked) <= set(revisions), "an acked event was never routed"
        assert {fid: r for fid, r in revisions.items() if len(r) != 1} == {}, "routed under two revisions"
        reviews = list(
            session.execute(select(ReviewItemRow.id, ReviewItemRow.queue, ReviewItemRow.feedback_id))
        )
        items = list(session.execute(select(DatasetItemRow.id, DatasetItemRow.source_feedback_ids)))
        patches = list(session.scalars(select(PromptPatchRow.id)))
    assert Counter((queue, fid) for _, queue, fid in reviews).most_common(1)[0][1] == 1, (
        "a doubled review item"
    )
    sources = Counter(fid for _, ids in items for fid in ids)
    assert sources.most_common(1)[0][1] == 1, "a feedback in two dataset items"
    # Each item made exactly once, by exactly one decision that says so.
    assert all(count == 1 for count in created.values()), [k for k, v in created.items() if v > 1]
    assert {rid for (kind, rid) in created if kind == "human_review"} == {rid for rid, _, _ in reviews}
    assert {rid for (kind, rid) in created if kind == "dataset_add"} == {rid for rid, _ in items}
    assert {rid for (kind, rid) in created if kind == "prompt_patch"} == set(patches)
    assert reviews and items and patches, "the load should exercise every action"
    return {"review_items": len(reviews), "dataset_items": len(items), "patches": len(patches)}


def check_index(client: Client, expected: int) -> None:
    status = client.pipeline.GetPipelineStatus(
        pipeline_pb2.GetPipelineStatusRequest(), metadata=client.metadata, timeout=60
    )
    assert (status.pending_index, status.pending_route, status.dead) == (0, 0, 0)
    assert (status.index.expected, status.index.indexed, status.index.missing) == (expected, expected, 0), (
        status
    )


def check_revision_everywhere(clients: list[Client], refresh_seconds: float) -> None:
    """The revision the policy Job applied is live on every api replica: for routing reads at once,
    for ingestion's validation within the schema refresh time."""
    assert [c.live_revision() for c in clients] == [1] * len(clients)
    deadline = time.monotonic() + refresh_seconds + 5
    # "accurate" exists only in the applied FeedbackSchema, "too_long" only in the built-in default.
    # Each replica stores one probe: the first it accepts.
    waiting = list(clients)
    while waiting:
        waiting = [c for c in waiting if not c.accepts("accurate")]
        assert time.monotonic() < deadline, "an api replica still validates against the old schema"
        time.sleep(0.2)
    assert not any(c.accepts("too_long") for c in clients)


def run_helm_test(run: ChartRun) -> None:
    run_hooks(run, "test")


# --- the shapes ---


def test_distributed_runs_for_real(postgres_url: str, milvus_server_uri: str, tmp_path: Path) -> None:
    collection = f"chart_{uuid.uuid4().hex[:8]}"
    values = common_values(collection)
    values["milvus"].update(existingSecret="fl-milvus", uriKey="uri", tokenKey="token")
    values.update(
        mode="distributed",
        database={"existingSecret": "fl-postgres", "secretKey": "url"},
        api={"replicaCount": 2},
        worker={"replicaCount": 2},
    )
    rendered = render_values(values)
    secrets = {"fl-postgres": {"url": postgres_url}, "fl-milvus": {"uri": milvus_server_uri, "token": ""}}
    run = ChartRun(rendered.objects, tmp_path, secrets)
    db = Database(postgres_url)
    try:
        run_hooks(run, "pre-install")  # the admin key Secret is data here; the migration Job runs
        pods = start_workloads(run)
        assert [len(pods["api"]), len(pods["worker"])] == [2, 2]
        run_hooks(run, "post-install")  # the policy Job
        key = run.secrets[ADMIN_SECRET[0]][ADMIN_SECRET[1]]
        clients = [Client(pod, key) for pod in pods["api"]]
        interactions = record_sessions(clients[0])
        check_revision_everywhere(clients, Settings().schema_refresh_seconds)
        stored = EVENTS + len(clients)  # and one probe per replica
        acked: list[str] = []
        for n, start in enumerate(range(0, EVENTS, STREAM)):
            if start == EVENTS // 2:
                # Halfway: once the workers are busy, one dies with its claimed batch in hand.
                deadline = time.monotonic() + 120
                while index_past(db) < EVENTS // 10:
                    assert time.monotonic() < deadline, "the workers never got going"
                    time.sleep(0.2)
                run.kill(pods["worker"][0], signal.SIGKILL)
            acked += send(clients[n % 2], start, interactions)
        wait_routed(db, stored)
        figures = check_once(db, acked)
        index = FeedbackIndex.from_settings(
            Settings(milvus_uri=milvus_server_uri, milvus_collection=collection)
        )
        try:
            assert index.count(PROJECT) == stored  # every stored feedback, once
        finally:
            index.close()
        check_index(clients[1], stored)
        assert [c.live_revision() for c in clients] == [1, 1]
        run_helm_test(run)
        print(f"distributed: {figures}")
        for client in clients:
            client.channel.close()
    finally:
        run.close()
        db.dispose()


def test_standalone_runs_for_real(tmp_path: Path) -> None:
    collection = f"chart_{uuid.uuid4().hex[:8]}"
    rendered = render_values(common_values(collection))
    run = ChartRun(rendered.objects, tmp_path, {})
    try:
        run_hooks(run, "pre-install")
        pods = start_workloads(run)
        (server,) = pods["standalone"]
        run_hooks(run, "post-install")
        key = run.secrets[ADMIN_SECRET[0]][ADMIN_SECRET[1]]
        client = Client(server, key)
        interactions = record_sessions(client)
        check_revision_everywhere([client], Settings().schema_refresh_seconds)
        acked: list[str] = []
        for start in range(0, EVENTS, STREAM):
            acked += send(client, start, interactions)
        (data,) = [path for name, path in run.claims.items() if name.startswith("data-")]
        db = Database(f"sqlite:///{data / 'feedbackloop.db'}")
        try:
            wait_routed(db, EVENTS + 1)
            figures = check_once(db, acked)
        finally:
            db.dispose()
        check_index(client, EVENTS + 1)
        run_helm_test(run)
        print(f"standalone: {figures}")
        client.channel.close()
    finally:
        run.close()
