"""The JSON endpoint (Connect unary) against a real server: a real gRPC server with the real
model and the pipeline on, a Starlette app of `connect_routes` served by uvicorn on a free
loopback port, and real HTTP requests."""

from __future__ import annotations

import base64
import gzip
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from feedbackloop import auth
from feedbackloop.config import Settings
from feedbackloop.console.connect import MAX_BODY_BYTES, Forwarder, connect_routes
from feedbackloop.server import App
from feedbackloop.store import keys
from feedbackloop.v1 import ingestion_pb2

ORIGIN = "https://shop.example"
QUEUE = """apiVersion: feedbackloop/v1
kind: ReviewQueue
metadata:
  name: json-q
spec:
  sla: 24h
---
apiVersion: feedbackloop/v1
kind: RoutingPolicy
metadata:
  name: down-to-json-q
spec:
  when: feedback.thumb == "down"
  actions:
    - human_review: {queue: json-q}
"""


class Served:
    """A uvicorn server running `app` on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
        # without it each response (headers, then body) waits 40 ms for a delayed ACK.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


class Endpoint:
    """The gRPC server, the JSON endpoint in front of it, and keys of project `shop`."""

    def __init__(self, app: App, served: Served) -> None:
        self.app = app
        self.url = served.url
        self.http = httpx.Client(base_url=served.url, timeout=30)
        self.key = keys.create_key(
            app.db, "shop", frozenset({auth.Scope.INGEST, auth.Scope.READ, auth.Scope.REVIEW}), reviewer="ann"
        )
        self.admin = keys.create_key(app.db, "shop", frozenset({auth.Scope.ADMIN}))
        self.ingest_only = keys.create_key(app.db, "shop", frozenset({auth.Scope.INGEST}))

    def call(
        self, method: str, body: Any = None, key: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = {"content-type": "application/json", **(headers or {})}
        if key:
            sent["authorization"] = f"Bearer {key}"
        return self.http.post(
            f"/feedbackloop.v1.{method}", json=body if body is not None else {}, headers=sent
        )

    def ok(self, method: str, body: Any = None, key: str | None = None) -> dict[str, Any]:
        response = self.call(method, body, key or self.key)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        result: dict[str, Any] = response.json()
        return result

    def turn(self, session: str, text: str = "The pro plan costs $10.") -> str:
        reply = self.ok(
            "IngestionService/RecordInteraction",
            {
                "interaction": {
                    "sessionId": session,
                    "turnIndex": 0,
                    "inputMessages": [{"role": "user", "content": "How much is the pro plan?"}],
                    "response": text,
                }
            },
        )
        return str(reply["interactionId"])


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Endpoint]:
    data = tmp_path_factory.mktemp("connect")
    bootstrap = keys.create_key  # the server refuses to start keyless without a key in the store
    settings = Settings(
        host="127.0.0.1",
        port=0,
        data_dir=data,
        policies_dir=None,
        allow_anonymous_loopback=False,
        console="off",
        pipeline_enabled=True,
        pipeline_poll_seconds=0.05,
        embedding_batch_max_wait_ms=0,
    )
    from feedbackloop.store.db import Database

    database = Database(settings.effective_database_url)
    database.upgrade()
    bootstrap(database, "shop", frozenset({auth.Scope.INGEST}), description="bootstrap")
    database.dispose()
    app = App(settings, embedder=embedder)
    app.start()
    web = Starlette(routes=connect_routes(f"127.0.0.1:{app.port}", cors_origins=[ORIGIN]))
    served = Served(web)
    try:
        yield Endpoint(app, served)
    finally:
        served.close()
        app.stop(grace=1.0)


def _session() -> str:
    return f"s-{uuid.uuid4().hex[:8]}"


def _until(check: Any, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_ingestion_calls_round_trip_in_the_json_mapping(endpoint: Endpoint) -> None:
    session = _session()
    turn = endpoint.turn(session)
    sent = endpoint.ok(
        "IngestionService/SubmitFeedback",
        {
            "feedback": {
                "interactionId": turn,
                "thumb": "THUMB_DOWN",
                "comment": "the <b>price</b> is outdated",
                "categories": [],
                "attributes": {"page": "pricing"},
            }
        },
    )
    assert sent["created"] is True and sent["feedbackId"].startswith("fb_")
    got = endpoint.ok("IngestionService/GetFeedback", {"feedback_id": sent["feedbackId"]})  # proto names too
    assert got["feedback"]["comment"] == "the <b>price</b> is outdated"
    assert got["feedback"]["thumb"] == "THUMB_DOWN" and got["interaction"]["id"] == turn
    whole = endpoint.ok("IngestionService/GetSession", {"sessionId": session})
    assert whole["sessionId"] == session
    assert [t["interaction"]["id"] for t in whole["turns"]] == [turn]
    assert [f["id"] for f in whole["turns"][0]["feedback"]] == [sent["feedbackId"]]
    listed = endpoint.ok("IngestionService/ListFeedback", {"pageSize": 50})
    assert sent["feedbackId"] in [f["id"] for f in listed["feedback"]]
    who = endpoint.ok("IdentityService/WhoAmI")
    assert who == {
        "project": "shop",
        "keyId": endpoint.key.split("_")[1],
        "scopes": ["ingest", "read", "review"],
        "reviewer": "ann",
    }


def test_recall_calls_find_the_feedback_once_indexed(endpoint: Endpoint) -> None:
    turn = endpoint.turn(_session(), "The pro plan costs $10 a month.")
    fb = endpoint.ok(
        "IngestionService/SubmitFeedback",
        {
            "feedback": {
                "interactionId": turn,
                "thumb": "THUMB_DOWN",
                "comment": "the listed subscription price is stale",
            }
        },
    )["feedbackId"]

    def found() -> list[dict[str, Any]]:
        hits = endpoint.ok("RecallService/SearchSimilar", {"text": "price out of date", "topK": 5}).get(
            "hits", []
        )
        return [h for h in hits if h["feedback"]["id"] == fb]

    (hit,) = _until(found)
    assert 0 < hit["score"] <= 1
    issues = endpoint.ok(
        "RecallService/TopIssues",
        {"timeRange": {"start": "2020-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}, "minSize": 1},
    )
    assert issues["totalNegative"] >= 1  # this feedback at least, indexed: the window reads it
    assert all(m.startswith("fb_") for issue in issues.get("issues", []) for m in issue["memberIds"])
    unbounded = endpoint.call("RecallService/TopIssues", {}, endpoint.key)
    assert (unbounded.status_code, unbounded.json()["code"]) == (400, "invalid_argument")
    assert "time_range" in unbounded.json()["message"]


def test_every_review_call_works_through_json(endpoint: Endpoint) -> None:
    applied = endpoint.ok(
        "RoutingService/ApplyPolicies",
        {"files": [{"path": "queue.yaml", "content": QUEUE}], "message": "json queue"},
        key=endpoint.admin,
    )
    assert int(applied["revision"]["revision"]) >= 1
    turn = endpoint.turn(_session())
    for comment in ("first complaint", "second complaint"):
        endpoint.ok(
            "IngestionService/SubmitFeedback",
            {"feedback": {"interactionId": turn, "thumb": "THUMB_DOWN", "comment": comment}},
        )

    def queued() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = endpoint.ok("ReviewService/ListReviewItems", {"queue": "json-q"}).get(
            "items", []
        )
        return items if len(items) == 2 else []

    first, second = _until(queued)
    assert endpoint.ok("ReviewService/GetReviewQueueStats", {"queue": "json-q"}) == {
        "queues": [{"queue": "json-q", "open": 2}]  # zero counts are left out, as the JSON mapping does
    }
    claim = endpoint.ok("ReviewService/ClaimReviewItem", {"queue": "json-q"})
    assert claim["item"]["id"] == first["id"] and claim["claimId"].startswith("rc_")
    assert endpoint.ok("ReviewService/GetReviewQueueStats")["queues"] == [
        {"queue": "json-q", "open": 1, "claimed": 1}
    ]
    renewed = endpoint.ok("ReviewService/RenewReviewClaim", {"claimId": claim["claimId"]})
    assert renewed["leaseExpiresAt"] >= claim["leaseExpiresAt"]
    assert endpoint.ok("ReviewService/ReleaseReviewClaim", {"claimId": claim["claimId"]}) == {}
    skipped = endpoint.ok("ReviewService/ClaimReviewItem", {"queue": "json-q", "skipItemIds": [first["id"]]})
    assert skipped["item"]["id"] == second["id"]
    resolved = endpoint.ok(
        "ReviewService/ResolveReviewItem",
        {"claimId": skipped["claimId"], "verdict": "REVIEW_VERDICT_REJECT", "correction": "It costs $12."},
    )
    assert resolved["itemDone"] is True and resolved["reviewsDone"] == 1
    assert endpoint.ok("ReviewService/GetReviewQueueStats", {"queue": "json-q"}) == {
        "queues": [{"queue": "json-q", "open": 1, "done": 1}]
    }


def test_errors_come_back_as_connect_errors_with_their_http_status(endpoint: Endpoint) -> None:
    bad = endpoint.call("IngestionService/SubmitFeedback", {"feedback": {"sessionId": ""}}, endpoint.key)
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/json"
    body = bad.json()
    assert body["code"] == "invalid_argument" and "feedback" in body["message"]
    (detail,) = body["details"]
    assert detail["type"] == "google.rpc.BadRequest"
    assert detail["debug"]["fieldViolations"][0]["field"].startswith("feedback")
    assert base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))  # unpadded base64

    missing = endpoint.call("IngestionService/GetFeedback", {"feedbackId": "fb_nope"}, endpoint.key)
    assert (missing.status_code, missing.json()) == (
        404,
        {
            "code": "not_found",
            "message": "feedback_id: no feedback 'fb_nope' in this project",
            "details": missing.json()["details"],
        },
    )
    denied = endpoint.call("IngestionService/ListFeedback", {}, endpoint.ingest_only)
    assert (denied.status_code, denied.json()["code"]) == (403, "permission_denied")
    assert denied.json()["message"] == "this API key lacks the 'read' scope"

    cases = {
        # Unknown service or method: 404 with Connect's unimplemented.
        ("feedbackloop.v1.NoSuchService/Get", "application/json"): (404, "unimplemented"),
        ("feedbackloop.v1.IngestionService/NoSuchMethod", "application/json"): (404, "unimplemented"),
        # Streaming methods are gRPC's alone.
        ("feedbackloop.v1.IngestionService/SubmitFeedbackStream", "application/json"): (501, "unimplemented"),
        ("feedbackloop.v1.DatasetService/ExportDataset", "application/json"): (501, "unimplemented"),
        # Another codec: 415.
        ("feedbackloop.v1.IdentityService/WhoAmI", "text/plain"): (415, "unimplemented"),
    }
    for (path, media), expected in cases.items():
        response = endpoint.http.post(
            f"/{path}",
            content=b"{}",
            headers={"content-type": media, "authorization": f"Bearer {endpoint.key}"},
        )
        assert (response.status_code, response.json()["code"]) == expected, path

    def raw(content: bytes, **headers: str) -> httpx.Response:
        return endpoint.http.post(
            "/feedbackloop.v1.IngestionService/GetSession",
            content=content,
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {endpoint.key}",
                **headers,
            },
        )

    not_json = raw(b"{not json")
    assert (not_json.status_code, not_json.json()["code"]) == (400, "invalid_argument")
    unknown = raw(b'{"sessionIdd": "x"}')
    assert unknown.status_code == 400 and "sessionIdd" in unknown.json()["message"]
    too_big = raw(b'{"sessionId": "' + b"x" * MAX_BODY_BYTES + b'"}')
    assert (too_big.status_code, too_big.json()["code"]) == (429, "resource_exhausted")
    bomb = raw(
        gzip.compress(b'{"sessionId": "' + b"x" * (2 * MAX_BODY_BYTES) + b'"}'),
        **{"content-encoding": "gzip"},
    )
    assert (bomb.status_code, bomb.json()["code"]) == (429, "resource_exhausted")
    assert raw(b"{}", **{"content-encoding": "br"}).json()["code"] == "unimplemented"
    assert raw(b"{}", **{"connect-protocol-version": "2"}).status_code == 400
    assert raw(b"{}", **{"connect-timeout-ms": "soon"}).status_code == 400
    empty = raw(b"")
    assert (empty.status_code, empty.json()["code"]) == (
        400,
        "invalid_argument",
    )  # an empty message: no session id
    assert empty.json()["message"] == "session_id: is required"
    get = endpoint.http.get("/feedbackloop.v1.IdentityService/WhoAmI")
    assert (get.status_code, get.headers["allow"]) == (405, "POST")


def test_gzip_bodies_binary_protobuf_and_timeouts_are_served(endpoint: Endpoint) -> None:
    session = _session()
    endpoint.turn(session)
    compressed = endpoint.http.post(
        "/feedbackloop.v1.IngestionService/GetSession",
        content=gzip.compress(f'{{"sessionId": "{session}"}}'.encode()),
        headers={
            "content-type": "application/json",
            "content-encoding": "gzip",
            "connect-protocol-version": "1",
            "connect-timeout-ms": "5000",
            "authorization": f"Bearer {endpoint.key}",
        },
    )
    assert compressed.status_code == 200 and compressed.json()["sessionId"] == session
    binary = endpoint.http.post(
        "/feedbackloop.v1.IngestionService/GetSession",
        content=ingestion_pb2.GetSessionRequest(session_id=session).SerializeToString(),
        headers={"content-type": "application/proto", "authorization": f"Bearer {endpoint.key}"},
    )
    assert binary.headers["content-type"] == "application/proto"
    assert ingestion_pb2.GetSessionResponse.FromString(binary.content).session_id == session
    # One millisecond is too short for any call: the deadline reaches the gRPC call.
    late = endpoint.call(
        "RecallService/SearchSimilar", {"text": "x"}, endpoint.key, {"connect-timeout-ms": "1"}
    )
    assert (late.status_code, late.json()["code"]) == (504, "deadline_exceeded")


def test_only_the_authorization_header_authenticates(endpoint: Endpoint) -> None:
    nobody = endpoint.call("IdentityService/WhoAmI")
    assert (nobody.status_code, nobody.json()) == (
        401,
        {
            "code": "unauthenticated",
            "message": "missing API key: send 'authorization: Bearer <key>' metadata",
        },
    )
    # A key in a cookie is nobody's credential here: the endpoint never reads cookies.
    endpoint.http.cookies.set("authorization", f"Bearer {endpoint.key}")
    try:
        assert endpoint.call("IdentityService/WhoAmI").status_code == 401
    finally:
        endpoint.http.cookies.clear()
    wrong = endpoint.call("IdentityService/WhoAmI", headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert wrong.json() == {
        "code": "unauthenticated",
        "message": "authorization metadata must be 'Bearer <key>'",
    }
    other = keys.create_key(endpoint.app.db, "globex", frozenset({auth.Scope.READ}))
    crossed = endpoint.call("IngestionService/GetSession", {"project": "shop", "sessionId": "s"}, other)
    assert (crossed.status_code, crossed.json()["message"]) == (
        403,
        "project: this API key belongs to project 'globex', not 'shop'",
    )


def test_a_feedback_token_submits_through_json_on_its_interaction_only(endpoint: Endpoint) -> None:
    session = _session()
    mine, other = endpoint.turn(session), endpoint.turn(_session())
    minted = endpoint.ok(
        "IngestionService/CreateFeedbackToken",
        {"interactionId": mine, "ttlSeconds": 2},
        key=endpoint.ingest_only,
    )
    token = minted["token"]
    assert token.startswith("fbt_") and minted["expiresAt"].endswith("Z")
    feedback = {"feedback": {"interactionId": mine, "thumb": "THUMB_UP", "comment": "thanks"}}
    accepted = endpoint.call("IngestionService/SubmitFeedback", feedback, token, {"origin": ORIGIN})
    assert accepted.status_code == 200, accepted.text
    assert accepted.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in accepted.headers
    stored = endpoint.ok("IngestionService/GetFeedback", {"feedbackId": accepted.json()["feedbackId"]})
    assert stored["feedback"]["interactionId"] == mine and stored["feedback"]["comment"] == "thanks"

    elsewhere = endpoint.call(
        "IngestionService/SubmitFeedback", {"feedback": {"interactionId": other, "thumb": "THUMB_UP"}}, token
    )
    assert (elsewhere.status_code, elsewhere.json()["message"]) == (
        403,
        f"feedback.interaction_id: this feedback token submits feedback on interaction '{mine}' only",
    )
    reading = endpoint.call("IngestionService/GetSession", {"sessionId": session}, token)
    assert (reading.status_code, reading.json()["message"]) == (
        403,
        "a feedback token may only call IngestionService/SubmitFeedback, not "
        "feedbackloop.v1.IngestionService/GetSession",
    )
    time.sleep(2.2)
    expired = endpoint.call("IngestionService/SubmitFeedback", feedback, token)
    assert (expired.status_code, expired.json()) == (
        401,
        {"code": "unauthenticated", "message": "feedback token expired"},
    )


def test_cors_preflight_admits_the_listed_origin_only(endpoint: Endpoint) -> None:
    def preflight(origin: str) -> httpx.Response:
        return endpoint.http.options(
            "/feedbackloop.v1.IngestionService/SubmitFeedback",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type, connect-protocol-version",
            },
        )

    allowed = preflight(ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    granted = {h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "connect-protocol-version"} <= granted
    assert "access-control-allow-credentials" not in allowed.headers
    refused = preflight("https://evil.example")
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    # A simple cross-origin POST from an unlisted origin gets no CORS grant: its page cannot read it.
    response = endpoint.call(
        "IdentityService/WhoAmI", key=endpoint.key, headers={"origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_no_cors_without_origins_and_an_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    forwarder = Forwarder(f"127.0.0.1:{closed_port}")
    served = Served(Starlette(routes=connect_routes("unused", forwarder=forwarder)))
    try:
        with httpx.Client(base_url=served.url, timeout=30) as http:
            down = http.post(
                "/feedbackloop.v1.IdentityService/WhoAmI",
                json={},
                headers={"connect-timeout-ms": "3000", "origin": ORIGIN},
            )
            assert down.status_code in (503, 504) and down.json()["code"] in (
                "unavailable",
                "deadline_exceeded",
            )
            assert "access-control-allow-origin" not in down.headers
            preflight = http.options(
                "/feedbackloop.v1.IdentityService/WhoAmI",
                headers={"origin": ORIGIN, "access-control-request-method": "POST"},
            )
            assert preflight.status_code == 405
    finally:
        served.close()
