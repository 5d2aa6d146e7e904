"""What every console response and state-changing request goes through.

- CSRF: each session has a random token; a POST must repeat it in the form field
  `csrf_token` or the `X-CSRF-Token` header (the page's script sends the header). The sign-in
  form, before any session exists, uses a double-submit cookie instead. SameSite=Strict
  cookies already keep other sites' requests cookieless; the token also covers same-site
  pages and old browsers.
- Origin: a POST whose Origin header names another origin is refused outright. Served over
  HTTPS (the request says so, or the secure-cookie setting says a TLS proxy is in front), the
  console's origin is `https://host` only: a page of the same host over plain HTTP, which
  anyone on the network path can write, is another origin.
- Size: a request body over the console's cap is answered 413 before the handler reads it
  whole (`BodyLimit`), so no form or upload fills memory or disk. The JSON endpoint caps its
  bodies itself, lower, counting them the same way (`declared_over`, `counted`), and answers
  in its own form.
- Host: on a loopback bind only loopback host names are answered, so a hostile page cannot
  reach the console through DNS rebinding.
- Headers: a Content-Security-Policy that allows only the console's own scripts and styles
  (no inline script: feedback text rendered into a page can never run), no framing, no
  sniffing, and no caching of pages that show feedback.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SIGN_IN_COOKIE = "feedbackloop_sign_in"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)

VERSIONED = re.compile(rb"(^|&)v=[0-9a-f]{12}(&|$)")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def tokens_match(expected: str, given: str | None) -> bool:
    return bool(expected) and given is not None and secrets.compare_digest(expected, given)


def same_origin(headers: Headers, scheme: str) -> bool:
    """False only when the request names an Origin that is not this console's.

    `scheme` is the request's as the console takes it (`SecurityHeaders` makes it "https"
    behind a TLS proxy, as the secure-cookie setting declares).
    """
    origin = headers.get("origin")
    if origin is None or origin == "null":
        # No Origin (older browsers, scripts): the CSRF token decides. A "null" origin (a
        # sandboxed frame, a redirect across origins) is never a console page.
        return origin is None
    host = headers.get("host", "")
    if scheme == "https":
        return origin == f"https://{host}"
    # Plain HTTP as far as the console can tell: a TLS proxy in front that the console was not
    # told about (no secure-cookie setting, X-Forwarded-Proto not trusted) still serves its
    # pages from https://host, and no one but that proxy can serve them there.
    return origin in {f"http://{host}", f"https://{host}"}


def host_name(host_header: str) -> str:
    """`host[:port]` or `[v6]:port` without the port."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class SecurityHeaders:
    """ASGI middleware: the headers above on every response, and the Host check.

    `https`: browsers reach the console over HTTPS through a TLS proxy (the secure-cookie
    setting), so every request is taken as HTTPS whatever the proxy's hop says; the Origin
    check then expects `https://`. The same rule marks the cookies Secure.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] | None, https: bool = False) -> None:
        self.app = app
        self.allowed_hosts = frozenset(allowed_hosts) if allowed_hosts is not None else None
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.https and scope.get("scheme") != "https":
            scope = {**scope, "scheme": "https"}
        if self.allowed_hosts is not None:
            host = host_name(Headers(scope=scope).get("host", ""))
            if host not in self.allowed_hosts:
                await _plain(send, 421, "this console answers only on its loopback address")
                return

        # Pages hold feedback: never kept. A static file named with its content's hash
        # (`static_url`) never changes: kept without asking again, so moving from one page to
        # the next costs no revalidation round trips. Other static files: kept, revalidated.
        if not scope["path"].startswith("/static/"):
            cache = b"no-store"
        elif VERSIONED.search(scope.get("query_string", b"")):
            cache = b"public, max-age=31536000, immutable"
        else:
            cache = b"no-cache"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                present = {name.lower() for name, _ in headers}
                for name, value in [*_HEADERS, (b"cache-control", cache)]:
                    if name not in present:
                        headers.append((name, value))
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(Exception):
    """Raised from `receive` once a request body passes the cap (`counted`)."""


def declared_over(headers: Headers, max_bytes: int) -> bool:
    """Whether the request's Content-Length says its body is larger than `max_bytes`: refused
    before any of the body is read."""
    declared = headers.get("content-length")
    return declared is not None and declared.strip().isdigit() and int(declared) > max_bytes


def counted(receive: Receive, max_bytes: int, refusal: str) -> Receive:
    """`receive`, counting the body as it arrives: it raises BodyTooLarge(refusal) as soon as the
    body passes `max_bytes`, so whoever reads it (a form, an upload) stops there. For a body
    without a Content-Length (chunked), or one that says less than it sends."""
    received = 0

    async def counted_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise BodyTooLarge(refusal)
        return message

    return counted_receive


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 and never read whole.

    A Content-Length over the cap is refused before any of the body is read; a body without
    one (chunked) is counted as it arrives and refused as soon as it passes the cap, so the
    handler reading it (a form, an upload) stops there. `caps_itself(path)`: the paths whose
    handler caps its body itself, lower, and answers a refusal in its own form (the JSON
    endpoint: Connect's error JSON, with its CORS headers), left to it.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, caps_itself: Callable[[str], bool] = lambda path: False
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.caps_itself = caps_itself

    def refusal(self) -> str:
        return f"request body: larger than {self.max_bytes:,} bytes, the most the console accepts"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.caps_itself(scope["path"]):
            await self.app(scope, receive, send)
            return
        if declared_over(Headers(scope=scope), self.max_bytes):
            await _plain(send, 413, self.refusal())
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted(receive, self.max_bytes, self.refusal()), tracked_send)
        except BodyTooLarge:
            if started:  # a handler that answered before reading on: nothing to add
                raise
            await _plain(send, 413, self.refusal())


_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
