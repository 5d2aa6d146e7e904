"""A credential gRPC cannot carry (non-ASCII in a key or a forwarded header) is bad input named
by its field, not a server error: gRPC itself fails such a call before sending it, with an
exception that is not a status. The server behind is unreachable; these are refused before any
call is made."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from feedbackloop.console.app import ConsoleConfig, build_app
from feedbackloop.console.security import CSRF_FIELD, SIGN_IN_COOKIE


@pytest.fixture
def client() -> Iterator[TestClient]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    app = build_app(ConsoleConfig(target=f"127.0.0.1:{closed_port}", loopback_only=False))
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


@pytest.mark.parametrize("key", ["fl_clé", "fl_\x7fkey"])
def test_a_key_grpc_cannot_carry_is_refused_at_sign_in(client: TestClient, key: str) -> None:
    assert client.get("/sign-in").status_code == 200
    token = client.cookies.get(SIGN_IN_COOKIE)
    assert token
    response = client.post(
        "/sign-in", data={CSRF_FIELD: token, "api_key": key}, headers={"origin": "http://testserver"}
    )
    assert response.status_code == 400
    assert "api_key: that is not an API key" in response.text


@pytest.mark.parametrize("header", ["authorization", "traceparent"])
def test_a_forwarded_header_grpc_cannot_carry_is_invalid_argument(client: TestClient, header: str) -> None:
    response = client.post(
        "/feedbackloop.v1.IdentityService/WhoAmI",
        json={},
        headers={header.encode(): b"Bearer cl\xe9"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_argument",
        "message": f"{header}: only printable ASCII is allowed",
    }
