"""The console's ASGI application: pages, static files, the JSON endpoint, and their guards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from feedbackloop.console import connect
from feedbackloop.console.backend import Backend
from feedbackloop.console.pages import PAGE_ROUTES
from feedbackloop.console.pages.policy_upload import APPLY_FORM_BYTES
from feedbackloop.console.security import LOOPBACK_HOSTS, BodyLimit, SecurityHeaders
from feedbackloop.console.sessions import SessionStore
from feedbackloop.console.web import Console, error_page, redirect


@dataclass(frozen=True)
class ConsoleConfig:
    """How one console runs.

    `target`: the gRPC server it is a client of. `loopback_only`: answer only requests whose
    Host is a loopback name (set when the console binds a loopback address). `secure_cookies`:
    mark cookies Secure and take every request as HTTPS (a TLS proxy in front). `cors_origins`:
    origins whose pages may call the JSON endpoint (with a key or a feedback token; never with
    the console's cookie).
    """

    target: str
    loopback_only: bool = True
    secure_cookies: bool = False
    cors_origins: tuple[str, ...] = ()


# The largest request body the console's pages take: applying the largest policy set a plan
# accepts (larger than any upload a plan accepts). Not a setting: the set's limits are the
# server's. The JSON endpoint caps its own, lower (connect.MAX_BODY_BYTES).
MAX_REQUEST_BYTES = APPLY_FORM_BYTES


async def home(request: Request) -> Response:
    return redirect("/reviews")


async def healthz(request: Request) -> Response:
    return Response("ok", media_type="text/plain")


async def not_found(request: Request, exc: Exception) -> Response:
    return error_page(request, 404, "There is no such page.")


def build_app(config: ConsoleConfig) -> Starlette:
    forwarder = connect.Forwarder(config.target)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The channel is made in the server's event loop: grpc.aio binds to the loop it starts in.
        console = Console(
            backend=Backend(config.target), sessions=SessionStore(), secure_cookies=config.secure_cookies
        )
        app.state.console = console
        try:
            yield
        finally:
            await console.backend.close()
            await forwarder.aclose()

    static = StaticFiles(directory=str(resources.files("feedbackloop.console") / "static"))
    routes: list[BaseRoute] = [
        Route("/", home, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Mount("/static", app=static, name="static"),
        *PAGE_ROUTES,
        # The JSON endpoint for scripts and browsers without gRPC: the key or a feedback token
        # in the Authorization header, never the console's cookie.
        *connect.connect_routes(config.target, cors_origins=config.cors_origins, forwarder=forwarder),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})
    allowed: Iterable[str] | None = LOOPBACK_HOSTS if config.loopback_only else None
    # The last added runs first: the Host check and the headers, then the body cap, so a 413
    # carries the headers too and a request for another host is refused before its size. The
    # JSON endpoint's paths are left to its own cap, answered as Connect errors with CORS headers.
    app.add_middleware(BodyLimit, max_bytes=MAX_REQUEST_BYTES, caps_itself=connect.serves)
    app.add_middleware(SecurityHeaders, allowed_hosts=allowed, https=config.secure_cookies)
    return app
