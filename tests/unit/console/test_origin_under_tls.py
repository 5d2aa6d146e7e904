"""The Origin check when the console is on HTTPS: known from the request (a TLS proxy whose
X-Forwarded-Proto the console trusts) or from the secure-cookie setting. Then only
`https://host` is the console's origin: a page of the same host over plain http, which anyone
on the network path can write, is refused like another site.

The gRPC server behind is unreachable: the refusals come before any call, and a request that
passes the Origin check stops at the next guard, which says so in its own words.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import httpx
import pytest
from starlette.datastructures import Headers
from starlette.testclient import TestClient

from feedbackloop.console.app import ConsoleConfig, build_app
from feedbackloop.console.runner import ConsoleServer
from feedbackloop.console.security import CSRF_FIELD, SIGN_IN_COOKIE, same_origin

ANOTHER_SITE = "This request came from another site and was refused."


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _client(base_url: str, *, secure_cookies: bool) -> TestClient:
    config = ConsoleConfig(
        target=f"127.0.0.1:{_closed_port()}", loopback_only=False, secure_cookies=secure_cookies
    )
    return TestClient(build_app(config), base_url=base_url)


def _refused(client: TestClient, origin: str) -> bool:
    status, page = _sign_in(client, origin)
    return status == 403 and ANOTHER_SITE in page


def _sign_in(client: TestClient, origin: str) -> tuple[int, str]:
    """The status and page of a sign-in posted from a page of `origin`."""
    form = client.get("/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    # A Secure cookie is not handed back over http by the client: sent by hand, as a browser
    # on the https page would.
    reply = client.post(
        "/sign-in",
        data={CSRF_FIELD: token.group(1), "api_key": "fl_test"},
        headers={"origin": origin, "cookie": f"{SIGN_IN_COOKIE}={token.group(1)}"},
    )
    return reply.status_code, reply.text


@pytest.fixture
def behind_tls_proxy() -> Iterator[TestClient]:
    """FEEDBACKLOOP_CONSOLE_SECURE_COOKIES: the proxy's hop is plain http."""
    with _client("http://console.example", secure_cookies=True) as client:
        yield client


def test_with_the_secure_cookie_setting_an_http_origin_is_refused(behind_tls_proxy: TestClient) -> None:
    assert _refused(behind_tls_proxy, "http://console.example")
    # The https page passes the Origin check: the next step calls the (unreachable) server.
    status, page = _sign_in(behind_tls_proxy, "https://console.example")
    assert status == 503 and "did not answer" in page


def test_on_an_https_request_an_http_origin_is_refused_without_the_setting() -> None:
    with _client("https://console.example", secure_cookies=False) as client:
        assert _refused(client, "http://console.example")
        assert _sign_in(client, "https://console.example")[0] == 503


def test_on_plain_http_without_the_setting_either_scheme_of_the_host_passes() -> None:
    """Plain http as far as the console can tell: a TLS proxy it was not told of still serves
    the pages from https://host, and no one else can."""
    with _client("http://console.example", secure_cookies=False) as client:
        for origin in ("http://console.example", "https://console.example"):
            assert _sign_in(client, origin)[0] == 503, origin
        assert _refused(client, "https://elsewhere.example")


def test_a_trusted_proxys_forwarded_proto_makes_the_request_https() -> None:
    """Over real HTTP: uvicorn takes X-Forwarded-Proto from a loopback proxy, the console then
    refuses an http Origin for the same host."""
    server = ConsoleServer(ConsoleConfig(target=f"127.0.0.1:{_closed_port()}"), "127.0.0.1", 0)
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers={"x-forwarded-proto": "https"}) as http:
            form = http.get("/sign-in")
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert token
            host = server.url.removeprefix("http://")
            for origin, status in [(f"http://{host}", 403), (f"https://{host}", 503)]:
                reply = http.post(
                    "/sign-in",
                    data={CSRF_FIELD: token.group(1), "api_key": "fl_test"},
                    headers={"origin": origin},
                )
                assert reply.status_code == status, (origin, reply.text)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("scheme", "origin", "same"),
    [
        ("https", "https://h:1", True),
        ("https", "http://h:1", False),
        ("http", "http://h:1", True),
        ("http", "https://h:1", True),
        ("https", "https://h:2", False),
        ("https", "null", False),
    ],
)
def test_same_origin(scheme: str, origin: str, same: bool) -> None:
    assert same_origin(Headers({"host": "h:1", "origin": origin}), scheme) is same
