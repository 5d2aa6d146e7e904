"""Sign in with an API key, sign out.

The key is checked by asking the server who it is (IdentityService.WhoAmI); the console keeps
it in the session and sets a cookie holding only the session id: HttpOnly (no script reads
it), SameSite=Strict (no other site's request carries it), Secure behind HTTPS.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from feedbackloop.console.backend import BackendError, fits_metadata
from feedbackloop.console.security import CSRF_FIELD, SIGN_IN_COOKIE, same_origin, tokens_match
from feedbackloop.console.sessions import COOKIE_NAME, IDLE_SECONDS, Identity
from feedbackloop.console.web import (
    Page,
    UnreadableForm,
    action,
    console_of,
    error_page,
    read_form,
    redirect,
    render,
    text_field,
)
from feedbackloop.v1 import identity_pb2

MAX_KEY_CHARS = 512


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path of this console (no open redirect).

    Browsers drop tabs and newlines from a URL and read a backslash as a slash, so a `next` of
    slash, tab, slash, host (or slash, backslash, host) would leave the site: any whitespace,
    control character or backslash is refused,
    as is anything with a scheme or a host.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if any(ch == "\\" or ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


async def who_is(request: Request, key: str | None) -> Identity:
    reply = await console_of(request).backend.call(
        console_of(request).backend.identity.WhoAmI, identity_pb2.WhoAmIRequest(), key
    )
    return Identity(
        project=reply.project, key_id=reply.key_id, scopes=frozenset(reply.scopes), reviewer=reply.reviewer
    )


async def keyless_allowed(request: Request) -> bool:
    """Whether the server answers without a key (a loopback development server)."""
    console = console_of(request)
    if console.server_allows_keyless is None:
        try:
            await who_is(request, None)
            console.server_allows_keyless = True
        except BackendError as error:
            if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return False  # ask again next time: the server may be starting
            console.server_allows_keyless = False
    return console.server_allows_keyless


async def sign_in_form(request: Request, *, message: str = "", status: int = 200) -> Response:
    token = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        status_code=status,
        sign_in_token=token,
        next=safe_next(request.query_params.get("next")),
        keyless=await keyless_allowed(request),
        message=message,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=console_of(request).secure_cookies,
        path="/sign-in",
    )
    return response


async def sign_in(request: Request) -> Response:
    if request.method == "GET":
        return await sign_in_form(request)
    if not same_origin(request.headers, request.url.scheme):
        return error_page(request, 403, "This request came from another site and was refused.")
    try:
        form = await read_form(request)  # the default limits: no files, small fields
    except UnreadableForm as refused:
        return error_page(request, refused.status, refused.message)
    if not tokens_match(request.cookies.get(SIGN_IN_COOKIE, ""), text_field(form, CSRF_FIELD)):
        return error_page(request, 403, "The sign-in form expired. Reload the page and try again.")
    keyless = text_field(form, "keyless") == "1"
    key = text_field(form, "api_key").strip()
    if not keyless and not key:
        return await sign_in_form(request, message="api_key: enter your API key", status=400)
    # A key travels as gRPC metadata: one it cannot carry is refused here as bad input.
    if len(key) > MAX_KEY_CHARS or not fits_metadata(key):
        return await sign_in_form(request, message="api_key: that is not an API key", status=400)
    try:
        identity = await who_is(request, None if keyless else key)
    except BackendError as error:
        if error.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return await sign_in_form(request, message=f"api_key: {error.message}", status=401)
        return error_page(request, 503, f"The feedbackloop server did not answer: {error.message}")
    console = console_of(request)
    session = console.sessions.create(None if keyless else key, identity)
    response = redirect(safe_next(text_field(form, "next")))
    response.set_cookie(
        COOKIE_NAME,
        session.id,
        max_age=IDLE_SECONDS,
        httponly=True,
        samesite="strict",
        secure=console.secure_cookies,
        path="/",
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/sign-in")
    return response


@action
async def sign_out(request: Request, page: Page, _form: object) -> Response:
    page.console.sessions.drop(page.session.id)
    response = redirect("/sign-in")
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


routes = [
    Route("/sign-in", sign_in, methods=["GET", "POST"]),
    Route("/sign-out", sign_out, methods=["POST"]),
]
