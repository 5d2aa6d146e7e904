"""The JSON endpoint: the Connect protocol's unary calls, forwarded to the gRPC API.

`POST /feedbackloop.v1.<Service>/<Method>` with the request message in the protos' JSON mapping
(`application/json`, or binary `application/proto`) answers the response message the same way,
and an error as Connect's error JSON with the HTTP status Connect gives its code
(https://connectrpc.com/docs/protocol). Browsers and scripts that cannot speak gRPC call the
same API this way; every call goes to the gRPC server over a real channel, so authentication,
scopes, tenancy and validation stay the server's, and this adds no second way to change state.

The credential is the request's own `Authorization` header (an API key, or a feedback token),
passed on as gRPC metadata; cookies are never read, so a page on another site cannot borrow
anyone's credential and there is no CSRF surface. Origins listed in
FEEDBACKLOOP_CONSOLE_CORS_ORIGINS may call it from their pages (preflight included), so an
application's own page can post feedback with a feedback token.

A forwarder over descriptors rather than the `connectrpc` package: that one is a beta with its
own protobuf runtime and HTTP client, needs a code-generation plugin of its own, and serves
services implemented in its process, while here every call must reach the gRPC API.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from feedbackloop.console.backend import fits_metadata
from feedbackloop.console.security import BodyTooLarge, counted, declared_over

# Imported for their descriptors: each registers its services (or, for error_details_pb2, the
# rich status's detail types) in the default pool.
from feedbackloop.v1 import (  # noqa: F401
    datasets_pb2,
    identity_pb2,
    ingestion_pb2,
    pipeline_pb2,
    prompts_pb2,
    recall_pb2,
    reviews_pb2,
    routing_pb2,
)

PACKAGE = "feedbackloop.v1"
# The services the gRPC server serves (PatchGeneratorService is one it calls, not one it serves).
SERVICES = (
    "IngestionService",
    "RecallService",
    "ReviewService",
    "IdentityService",
    "RoutingService",
    "PromptService",
    "DatasetService",
    "PipelineService",
)
# The largest request body (and the most a compressed one may inflate to). The endpoint caps
# its bodies itself and answers a refusal as a Connect error, so the console's cap for pages
# (security.BodyLimit, larger) leaves these paths to it (`serves`).
MAX_BODY_BYTES = 1024 * 1024
# Without a Connect-Timeout-Ms header a call gets this long; a header may ask for less or more,
# up to MAX_TIMEOUT_SECONDS.
DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 600.0
JSON = "application/json"
PROTO = "application/proto"
# Request headers passed on as gRPC metadata: the credential and the W3C trace context. Nothing
# else, and never a cookie.
FORWARDED_HEADERS = ("authorization", "traceparent", "tracestate")
STATUS_DETAILS_KEY = "grpc-status-details-bin"
_DETAIL_TYPES = (error_details_pb2.BadRequest,)

# Connect's code names and the HTTP status each maps to (the protocol's error-code table).
CONNECT_CODES: dict[grpc.StatusCode, tuple[str, int]] = {
    grpc.StatusCode.CANCELLED: ("canceled", 499),
    grpc.StatusCode.UNKNOWN: ("unknown", 500),
    grpc.StatusCode.INVALID_ARGUMENT: ("invalid_argument", 400),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("deadline_exceeded", 504),
    grpc.StatusCode.NOT_FOUND: ("not_found", 404),
    grpc.StatusCode.ALREADY_EXISTS: ("already_exists", 409),
    grpc.StatusCode.PERMISSION_DENIED: ("permission_denied", 403),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("resource_exhausted", 429),
    grpc.StatusCode.FAILED_PRECONDITION: ("failed_precondition", 400),
    grpc.StatusCode.ABORTED: ("aborted", 409),
    grpc.StatusCode.OUT_OF_RANGE: ("out_of_range", 400),
    grpc.StatusCode.UNIMPLEMENTED: ("unimplemented", 501),
    grpc.StatusCode.INTERNAL: ("internal", 500),
    grpc.StatusCode.UNAVAILABLE: ("unavailable", 503),
    grpc.StatusCode.DATA_LOSS: ("data_loss", 500),
    grpc.StatusCode.UNAUTHENTICATED: ("unauthenticated", 401),
}
_TIMEOUT = re.compile(r"[0-9]{1,10}")
# The paths `connect_routes` serves: a service of the package (ServicePath), then a method.
_ROUTE_PATH = re.compile("/" + re.escape(PACKAGE) + r"\.[A-Za-z0-9_]+/[^/]+")


def serves(path: str) -> bool:
    """Whether `path` is one the JSON endpoint answers (and caps the body of) itself."""
    return _ROUTE_PATH.fullmatch(path) is not None


class ServicePath(Convertor[str]):
    """A path segment naming a service of this package, so only those reach the endpoint."""

    regex = re.escape(PACKAGE) + r"\.[A-Za-z0-9_]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("feedbackloop_service", ServicePath())


class ConnectError(Exception):
    """An error answered in Connect's form; `status` overrides the code's usual HTTP status."""

    def __init__(
        self, code: grpc.StatusCode, message: str, status: int | None = None, details: Sequence[Any] = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = list(details)

    def response(self, headers: dict[str, str] | None = None) -> Response:
        name, http_status = CONNECT_CODES.get(self.code, ("unknown", 500))
        body: dict[str, Any] = {"code": name, "message": self.message}
        if self.details:
            body["details"] = self.details
        return Response(
            json.dumps(body, ensure_ascii=False),
            status_code=self.status or http_status,
            media_type=JSON,
            headers=headers,
        )


@dataclass(frozen=True)
class Method:
    """One RPC: its gRPC path, message classes and shape."""

    path: str
    request: type[Message]
    response: type[Message]
    streaming: bool


def methods() -> dict[str, Method]:
    """Every method of the served services, by `<package>.<Service>/<Method>`."""
    pool = descriptor_pool.Default()
    found: dict[str, Method] = {}
    for name in SERVICES:
        service = pool.FindServiceByName(f"{PACKAGE}.{name}")
        for method in service.methods:
            key = f"{service.full_name}/{method.name}"
            found[key] = Method(
                path=f"/{key}",
                request=message_factory.GetMessageClass(method.input_type),
                response=message_factory.GetMessageClass(method.output_type),
                streaming=method.client_streaming or method.server_streaming,
            )
    return found


def _status_details(metadata: Any) -> list[dict[str, Any]]:
    """The rich status's details (BadRequest field violations...) in Connect's form."""
    for key, value in metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        details = []
        for packed in status.details:
            type_name = packed.TypeName()
            entry: dict[str, Any] = {
                "type": type_name,
                "value": base64.b64encode(packed.value).decode().rstrip("="),
            }
            try:
                descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
                message = message_factory.GetMessageClass(descriptor)()
                packed.Unpack(message)
                entry["debug"] = json_format.MessageToDict(message)
            except KeyError:
                pass  # a detail type this process does not know goes without its readable form
            details.append(entry)
        return details
    return []


def _timeout(request: Request) -> float:
    raw = request.headers.get("connect-timeout-ms")
    if raw is None:
        return DEFAULT_TIMEOUT_SECONDS
    if not _TIMEOUT.fullmatch(raw):
        raise ConnectError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"connect-timeout-ms: must be a positive integer of at most 10 digits (got {raw[:20]!r})",
        )
    return min(int(raw) / 1000, MAX_TIMEOUT_SECONDS)


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise ConnectError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"content-encoding: {encoding[:40]!r} is not supported (gzip or identity)",
        )
    try:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        # At most one byte past the limit is inflated: a small bomb cannot expand in memory.
        data = decompressor.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as error:
        raise ConnectError(grpc.StatusCode.INVALID_ARGUMENT, f"body: not valid gzip ({error})") from error
    if len(data) > MAX_BODY_BYTES:
        raise ConnectError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, f"body: larger than {MAX_BODY_BYTES} bytes once decompressed"
        )
    return data


async def _read_body(request: Request) -> bytes:
    if declared_over(request.headers, MAX_BODY_BYTES):
        raise ConnectError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"body: {request.headers['content-length'].strip()} bytes; the limit is {MAX_BODY_BYTES}",
        )
    refusal = f"body: larger than the limit of {MAX_BODY_BYTES} bytes"
    try:
        return await Request(request.scope, counted(request.receive, MAX_BODY_BYTES, refusal)).body()
    except BodyTooLarge:
        raise ConnectError(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal) from None


def _codec(request: Request) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in (JSON, PROTO):
        return media
    raise ConnectError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"content-type: {media[:60]!r} is not supported; send {JSON} (or {PROTO}) to a unary method",
        status=415,
    )


def _parse(method: Method, codec: str, body: bytes) -> Message:
    message = method.request()
    if codec == PROTO:
        try:
            message.ParseFromString(body)
        except DecodeError as error:
            raise ConnectError(
                grpc.StatusCode.INVALID_ARGUMENT, f"body: not a valid message ({error})"
            ) from error
        return message
    if not body.strip():
        return message  # an empty body is the empty message
    try:
        json_format.Parse(body.decode("utf-8"), message)
    except UnicodeDecodeError as error:
        raise ConnectError(grpc.StatusCode.INVALID_ARGUMENT, "body: not UTF-8") from error
    except json_format.ParseError as error:
        raise ConnectError(grpc.StatusCode.INVALID_ARGUMENT, f"body: {error}") from error
    return message


def _forwarded_metadata(request: Request) -> tuple[tuple[str, str], ...]:
    metadata = tuple((name, request.headers[name]) for name in FORWARDED_HEADERS if name in request.headers)
    for name, value in metadata:
        if not fits_metadata(value):
            raise ConnectError(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: only printable ASCII is allowed")
    return metadata


class Forwarder:
    """Forwards Connect unary calls to the gRPC server at `target`.

    The channel is made on first use, in the serving event loop (grpc.aio binds a channel to
    the loop it is made in), and made again if a later call runs in another loop.
    """

    def __init__(self, target: str, channel_options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self._options = [
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            *channel_options,
        ]
        self._methods = methods()
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def channel(self) -> grpc.aio.Channel:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            self._loop = loop
        return self._channel

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.handle(request)
        except ConnectError as error:
            response = error.response()
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        key = f"{request.path_params['service']}/{request.path_params['method']}"
        method = self._methods.get(key)
        if method is None:
            raise ConnectError(grpc.StatusCode.UNIMPLEMENTED, f"no method {key}", status=404)
        if request.method != "POST":
            return ConnectError(
                grpc.StatusCode.UNIMPLEMENTED, f"{request.method} is not served: send POST", status=405
            ).response({"allow": "POST"})
        if method.streaming:
            raise ConnectError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{key} is a streaming method; the JSON endpoint serves unary methods only (use gRPC)",
            )
        version = request.headers.get("connect-protocol-version")
        if version is not None and version != "1":
            raise ConnectError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"connect-protocol-version: must be 1 (got {version[:20]!r})",
            )
        codec = _codec(request)
        timeout = _timeout(request)
        body = _decompress(await _read_body(request), request.headers.get("content-encoding", "").lower())
        message = _parse(method, codec, body)
        metadata = _forwarded_metadata(request)
        call = self.channel().unary_unary(
            method.path,
            request_serializer=type(message).SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            reply = await call(message, metadata=metadata or None, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise ConnectError(
                error.code(), error.details() or "", details=_status_details(error.trailing_metadata())
            ) from error
        if codec == PROTO:
            return Response(reply.SerializeToString(), media_type=PROTO)
        return Response(json_format.MessageToJson(reply, indent=None, ensure_ascii=False), media_type=JSON)


def _with_cors(app: ASGIApp, origins: Sequence[str]) -> ASGIApp:
    if not origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=["POST"],
        allow_headers=["authorization", "content-type", "connect-protocol-version", "connect-timeout-ms"],
        # No cookies, ever: the credential is the Authorization header the page sets itself.
        allow_credentials=False,
        max_age=7200,
    )


def connect_routes(
    target: str,
    *,
    channel_options: Sequence[tuple[str, Any]] = (),
    cors_origins: Sequence[str] = (),
    forwarder: Forwarder | None = None,
) -> list[BaseRoute]:
    """Routes serving `POST /feedbackloop.v1.<Service>/<Method>` by forwarding to `target`.

    `cors_origins` (FEEDBACKLOOP_CONSOLE_CORS_ORIGINS) may call them from their pages; pass a
    `forwarder` to close its channel yourself (`await forwarder.aclose()`) on shutdown.
    """
    app = forwarder or Forwarder(target, channel_options)
    return [Route("/{service:feedbackloop_service}/{method}", endpoint=_with_cors(app, cors_origins))]
