"""What every page handler shares: the signed-in session, CSRF checks, templates, errors.

A page module exports `routes`; its handlers take the request and a `Page` (`@page` finds the
session, or sends the browser to sign in) and return `page.render(...)` or a redirect.
State-changing handlers are `@action`: POST only, with the session's CSRF token checked
before the handler runs; `@action(limits=...)` for a form larger than most (`FormLimits`).
Every form is read through `read_form`, sign-in's (the one POST outside `@action`) included.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, overload
from urllib.parse import quote

import jinja2
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from feedbackloop.console.backend import CALL_TIMEOUT_SECONDS, Backend, BackendError
from feedbackloop.console.security import CSRF_FIELD, CSRF_HEADER, same_origin, tokens_match
from feedbackloop.console.sessions import COOKIE_NAME, ConsoleSession, SessionStore
from feedbackloop.v1 import common_pb2, routing_pb2

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(resources.files("feedbackloop.console") / "templates")),
    autoescape=True,  # every value is text unless a template says otherwise; none does
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def timestamp_text(value: Timestamp | float | None) -> str:
    """A protobuf Timestamp (or epoch seconds) as `YYYY-MM-DD HH:MM UTC`; "" when unset."""
    if value is None:
        return ""
    if isinstance(value, Timestamp):
        if not value.seconds and not value.nanos:
            return ""
        value = value.seconds + value.nanos / 1e9
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


TEMPLATES.filters["when"] = timestamp_text
TEMPLATES.globals.update(
    source_names={
        common_pb2.FEEDBACK_SOURCE_UNSPECIFIED: "end user",
        common_pb2.FEEDBACK_SOURCE_END_USER: "end user",
        common_pb2.FEEDBACK_SOURCE_REVIEWER: "reviewer",
        common_pb2.FEEDBACK_SOURCE_EVALUATOR: "evaluator",
    },
    implicit_names={
        value: name.removeprefix("IMPLICIT_SIGNAL_").lower()
        for name, value in common_pb2.ImplicitSignal.items()
    },
    outcome_name=lambda value: (
        routing_pb2.DecisionOutcome.Name(value).removeprefix("DECISION_OUTCOME_").lower()
    ),
)
TEMPLATES.filters["tojson_attr"] = lambda value: json.dumps(value, separators=(",", ":"))

STATIC = resources.files("feedbackloop.console") / "static"


@functools.cache
def static_url(path: str) -> str:
    """`/static/<path>?v=<hash of its content>`: a URL the browser may keep without asking again
    (security.py marks versioned static files immutable), which changes when the file does."""
    digest = hashlib.sha256((STATIC / path).read_bytes()).hexdigest()[:12]
    return f"/static/{path}?v={digest}"


TEMPLATES.globals["static_url"] = static_url


@dataclass
class Console:
    """The running console's parts, as the handlers reach them (`request.app.state.console`)."""

    backend: Backend
    sessions: SessionStore
    secure_cookies: bool
    server_allows_keyless: bool | None = None  # learnt at the first sign-in page


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


@dataclass
class Page:
    """One request of a signed-in person."""

    request: Request
    session: ConsoleSession
    console: Console

    @property
    def key(self) -> str | None:
        return self.session.key

    async def call(self, method: Callable[..., Awaitable[Any]], request: Any, **kwargs: Any) -> Any:
        return await self.console.backend.call(method, request, self.session.key, **kwargs)

    def messages(
        self, method: Callable[..., Any], request: Any, *, idle_timeout: float = CALL_TIMEOUT_SECONDS
    ) -> AsyncGenerator[Any, None]:
        """A server-streaming call's messages as they arrive (`Backend.messages`)."""
        return self.console.backend.messages(method, request, self.session.key, idle_timeout=idle_timeout)

    def render(self, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        return render(self.request, template, session=self.session, status_code=status_code, **context)

    def can(self, scope: str) -> bool:
        return self.session.identity.allows(scope)


def render(
    request: Request,
    template: str,
    *,
    session: ConsoleSession | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(
        request=request,
        session=session,
        identity=session.identity if session else None,
        csrf_token=session.csrf_token if session else "",
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    # 303: the browser follows a POST's answer with a GET (post, redirect, get).
    return RedirectResponse(url, status_code=303)


Handler = Callable[..., Awaitable[Response]]
Wrapped = Callable[[Request], Awaitable[Response]]


class ErrorAnswer(Protocol):
    """How an action's refusals are answered: the error page (`error_page`) for a form a person
    sent, JSON for an endpoint a page's script calls and reads."""

    def __call__(
        self, request: Request, status: int, message: str, *, session: ConsoleSession | None = None
    ) -> Response: ...


@dataclass(frozen=True)
class FormLimits:
    """What one action's form may carry, passed to `request.form()` as it parses the body.

    The default fits every form but the policy plan and apply: no files, small fields. The
    whole body is capped before this (security.BodyLimit); these bound a single form.
    """

    max_files: int = 0
    max_fields: int = 1000  # a review's category checkboxes are one field each
    max_part_size: int = 1024 * 1024  # one field's value, in bytes as sent


@dataclass(frozen=True)
class UnreadableForm(Exception):
    """A form over its limits (or malformed), with the status and words to answer it with."""

    status: int
    message: str


async def read_form(request: Request, limits: FormLimits = FormLimits()) -> FormData:
    """The request's form, read within `limits`: every POST handler's one way to its form.
    One over them (or not a form at all) raises UnreadableForm, saying which limit."""
    try:
        return await request.form(
            max_files=limits.max_files,
            max_fields=limits.max_fields,
            max_part_size=limits.max_part_size,
        )
    except HTTPException as error:  # Starlette's words for the limit the form passed
        raise UnreadableForm(error.status_code, f"The form could not be read: {error.detail}") from None


def _session_of(request: Request) -> ConsoleSession | None:
    return console_of(request).sessions.get(request.cookies.get(COOKIE_NAME))


def page(handler: Handler) -> Wrapped:
    """A GET handler for signed-in people; others go to the sign-in page and come back."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        session = _session_of(request)
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return redirect(f"/sign-in?next={quote(target, safe='')}")
        return await _handle(handler, request, Page(request, session, console_of(request)))

    return wrapped


@overload
def action(handler: Handler, *, limits: FormLimits = ..., errors: ErrorAnswer | None = ...) -> Wrapped: ...


@overload
def action(
    handler: None = None, *, limits: FormLimits = ..., errors: ErrorAnswer | None = ...
) -> Callable[[Handler], Wrapped]: ...


def action(
    handler: Handler | None = None, *, limits: FormLimits = FormLimits(), errors: ErrorAnswer | None = None
) -> Wrapped | Callable[[Handler], Wrapped]:
    """A POST handler: signed in, same origin, and the session's CSRF token, or 403. Its form
    is read within `limits`; one over them is a 400 page saying which limit. `errors` answers
    every refusal, these and the server's (the error page unless given)."""
    if handler is None:
        return functools.partial(_action, limits=limits, errors=errors)
    return _action(handler, limits=limits, errors=errors)


def _action(handler: Handler, *, limits: FormLimits, errors: ErrorAnswer | None = None) -> Wrapped:
    answer = errors or error_page

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        session = _session_of(request)
        if session is None:
            return answer(request, 401, "You are not signed in (or your session expired). Sign in again.")
        if not same_origin(request.headers, request.url.scheme):
            return answer(request, 403, "This request came from another site and was refused.")
        try:
            form = await read_form(request, limits)
        except UnreadableForm as refused:
            return answer(request, refused.status, refused.message, session=session)
        given = request.headers.get(CSRF_HEADER) or _field(form, CSRF_FIELD)
        if not tokens_match(session.csrf_token, given):
            return answer(
                request, 403, "The form's security token is missing or wrong. Reload the page and try again."
            )
        return await _handle(
            handler, request, Page(request, session, console_of(request)), form, errors=answer
        )

    return wrapped


async def _handle(
    handler: Handler, request: Request, page_: Page, *extra: Any, errors: ErrorAnswer | None = None
) -> Response:
    try:
        return await handler(request, page_, *extra)
    except BackendError as error:
        return (errors or error_page)(
            request, _HTTP_STATUS.get(error.code.name, 502), error.message, session=page_.session
        )


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def text_field(form: FormData, name: str, default: str = "") -> str:
    return _field(form, name) or default


def error_page(
    request: Request, status: int, message: str, *, session: ConsoleSession | None = None
) -> HTMLResponse:
    return render(request, "error.html", session=session, status_code=status, status=status, message=message)


# The server's refusals, as the browser should see them.
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 409,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "NOT_FOUND": 404,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
