"""Sign-in reads its form within the limits every action's form has (no files, small fields): a
form carrying a file is refused, saying why, before the key is asked about, and signs no one in.

The gRPC server behind is a stand-in IdentityService that takes every key (and none: keyless),
counting the keys it was asked about, so a form that got past the limits would sign in.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from starlette.testclient import TestClient

from feedbackloop.console.app import ConsoleConfig, build_app
from feedbackloop.console.security import CSRF_FIELD, SIGN_IN_COOKIE
from feedbackloop.console.sessions import COOKIE_NAME
from feedbackloop.v1 import identity_pb2, identity_pb2_grpc

ORIGIN = "http://testserver"


class AnyKey(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self) -> None:
        self.keys: list[str] = []

    def WhoAmI(self, request: identity_pb2.WhoAmIRequest, context: Any) -> identity_pb2.WhoAmIResponse:
        self.keys += [value for name, value in context.invocation_metadata() if name == "authorization"]
        return identity_pb2.WhoAmIResponse(project="default", key_id="k1", scopes=["read"], reviewer="key:k1")


@pytest.fixture
def identity() -> Iterator[tuple[AnyKey, str]]:
    servicer = AnyKey()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


@pytest.fixture
def client(identity: tuple[AnyKey, str]) -> Iterator[TestClient]:
    app = build_app(ConsoleConfig(target=identity[1], loopback_only=False))
    with TestClient(app, base_url=ORIGIN) as test_client:
        yield test_client


def _sign_in_token(client: TestClient) -> str:
    assert client.get("/sign-in").status_code == 200
    token = client.cookies.get(SIGN_IN_COOKIE)
    assert token
    return token


def _sessions(client: TestClient) -> int:
    return len(client.app.state.console.sessions._sessions)  # type: ignore[attr-defined]


def test_a_sign_in_form_carrying_a_file_is_refused_and_signs_no_one_in(
    client: TestClient, identity: tuple[AnyKey, str]
) -> None:
    servicer, _ = identity
    fields = {CSRF_FIELD: _sign_in_token(client), "api_key": "fl_test", "next": "/reviews"}
    refused = client.post(
        "/sign-in",
        data=fields,
        files={"upload": ("big.bin", b"x" * 1024, "application/octet-stream")},
        headers={"origin": ORIGIN},
        follow_redirects=False,
    )
    assert refused.status_code == 400, refused.text
    assert "The form could not be read: Too many files. Maximum number of files is 0." in refused.text
    assert COOKIE_NAME not in refused.cookies
    assert servicer.keys == [] and _sessions(client) == 0
    # The same fields without the file sign in: the file alone was refused.
    signed_in = client.post("/sign-in", data=fields, headers={"origin": ORIGIN}, follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    assert signed_in.headers["location"] == "/reviews"
    assert servicer.keys == ["Bearer fl_test"] and _sessions(client) == 1
