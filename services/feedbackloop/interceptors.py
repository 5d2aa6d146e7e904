"""Server interceptors, installed in this order: metrics, tracing, auth, then error mapping.

Each wraps the RPC's behaviour function; `_WrappingInterceptor` does the plumbing for the four
RPC shapes so every concern is one `scope` context manager.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from feedbackloop import auth
from feedbackloop.errors import FeedbackloopError, Unauthenticated
from feedbackloop.metrics.instruments import Metrics
from feedbackloop.telemetry import tracer

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str | bytes], ...]

# Methods anyone may call: discovery and health checks.
OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
# Client faults: the span is not marked as an error for these.
CLIENT_FAULTS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}


def is_open_method(method: str) -> bool:
    return method.startswith(OPEN_SERVICES)


def abort_with(context: grpc.ServicerContext, error: FeedbackloopError) -> None:
    """Abort the RPC with a rich status; BadRequest details list each field violation.

    An error may carry more details for the client as `status_details` (messages packed after
    the BadRequest), e.g. the acks of a client stream that failed part-way.
    """
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    if error.violations:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
        status.details.append(detail)
    extra: tuple[Message, ...] = getattr(error, "status_details", ())
    for message in extra:
        packed = any_pb2.Any()
        packed.Pack(message)
        status.details.append(packed)
    context.abort_with_status(rpc_status.to_status(status))


class _WrappingInterceptor(grpc.ServerInterceptor):
    """Runs `scope` around each RPC: around the call for a unary response, and around the whole
    iteration for a streamed one, so messages still go out as the servicer yields them."""

    def applies_to(self, method: str) -> bool:
        return True

    def scope(
        self, method: str, metadata: Metadata, context: grpc.ServicerContext
    ) -> AbstractContextManager[None]:
        raise NotImplementedError

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not self.applies_to(method):
            return handler
        metadata: Metadata = tuple(handler_call_details.invocation_metadata or ())
        scope = self.scope

        def unary_response(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                with scope(method, metadata, context):
                    return behavior(request, context)

            return wrapped

        def stream_response(
            behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        ) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                # gRPC iterates this generator on the RPC's own thread, so the scope (span,
                # principal) stays current while each message is produced and sent.
                with scope(method, metadata, context):
                    yield from behavior(request, context)

            return wrapped

        h: Any = handler
        if h.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                unary_response(h.unary_unary), h.request_deserializer, h.response_serializer
            )
        if h.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                unary_response(h.stream_unary), h.request_deserializer, h.response_serializer
            )
        if h.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                stream_response(h.unary_stream), h.request_deserializer, h.response_serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            stream_response(h.stream_stream), h.request_deserializer, h.response_serializer
        )


class TracingInterceptor(_WrappingInterceptor):
    """A SERVER span per RPC, parented on the client's W3C traceparent from the metadata."""

    def applies_to(self, method: str) -> bool:
        # Health checks and reflection stay out of traces. Reflection must also stay out of
        # `stream_response`, which drains the whole stream before replying: on a bidirectional
        # stream whose client waits for each answer (grpcurl) that deadlocks.
        return not is_open_method(method)

    @contextmanager
    def scope(self, method: str, metadata: Metadata, context: grpc.ServicerContext) -> Iterator[None]:
        carrier = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in metadata}
        parent = propagate.extract(carrier)
        service, _, rpc = method.lstrip("/").partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
        with tracer().start_as_current_span(
            method.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:
                code = _context_code(context) or grpc.StatusCode.UNKNOWN
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code not in CLIENT_FAULTS:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, code.name))
                raise
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])


class MetricsInterceptor(_WrappingInterceptor):
    """Records each RPC's duration by service, method and final status code; outermost, so the
    time includes authentication and a refused call is counted with its code."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def applies_to(self, method: str) -> bool:
        return not is_open_method(method)  # probes and reflection, as for tracing

    @contextmanager
    def scope(self, method: str, metadata: Metadata, context: grpc.ServicerContext) -> Iterator[None]:
        started = time.perf_counter()
        code: grpc.StatusCode | None = None
        try:
            yield
        except GeneratorExit:  # a streamed response the client stopped reading
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = _context_code(context) or grpc.StatusCode.UNKNOWN
            raise
        finally:
            # A servicer may also set a code and return normally.
            final = code or _context_code(context) or grpc.StatusCode.OK
            service, _, rpc = method.lstrip("/").partition("/")
            self._metrics.rpc(service, rpc, final.name, time.perf_counter() - started)


def _context_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    code_fn = getattr(context, "code", None)
    return code_fn() if callable(code_fn) else None


class AuthInterceptor(_WrappingInterceptor):
    """Resolves the API key to a principal and checks the method's required scope (None: any
    valid key)."""

    def __init__(
        self,
        resolve_key: Callable[[str], auth.Principal | None],
        required_scopes: Mapping[str, auth.Scope | None],
        anonymous: auth.Principal | None,
        resolve_feedback_token: Callable[[str], auth.Principal] | None = None,
    ) -> None:
        """`resolve_feedback_token` raises for a token it refuses; without it tokens are refused."""
        self._resolve_key = resolve_key
        self._required = required_scopes
        self._anonymous = anonymous
        self._resolve_feedback_token = resolve_feedback_token

    def applies_to(self, method: str) -> bool:
        return not is_open_method(method)

    @contextmanager
    def scope(self, method: str, metadata: Metadata, context: grpc.ServicerContext) -> Iterator[None]:
        try:
            principal = self._authenticate(method, metadata)
            if method not in self._required:
                # Fail closed: a method nobody declared a scope for is not callable.
                raise auth.PermissionDenied(f"{method} has no declared scope")
            scope = self._required[method]
            if scope is not None:
                principal.require(scope)
        except FeedbackloopError as error:
            abort_with(context, error)
        token = auth.set_principal(principal)
        try:
            yield
        finally:
            auth.reset_principal(token)

    def _authenticate(self, method: str, metadata: Metadata) -> auth.Principal:
        key = auth.bearer_token(metadata)
        if key is None:
            if self._anonymous is not None:
                return self._anonymous
            raise Unauthenticated("missing API key: send 'authorization: Bearer <key>' metadata")
        if key.startswith(auth.FEEDBACK_TOKEN_PREFIX):
            # Gated on the method before any lookup: a browser's token opens nothing else.
            if method not in auth.FEEDBACK_TOKEN_METHODS:
                raise auth.PermissionDenied(
                    f"a feedback token may only call IngestionService/SubmitFeedback, not {method.lstrip('/')}"
                )
            if self._resolve_feedback_token is None:
                raise Unauthenticated("this server does not accept feedback tokens")
            return self._resolve_feedback_token(key)
        principal = self._resolve_key(key)
        if principal is None:
            raise Unauthenticated("invalid or revoked API key")
        return principal


class ErrorMappingInterceptor(_WrappingInterceptor):
    """Turns domain errors into statuses; anything else becomes INTERNAL and is logged."""

    def applies_to(self, method: str) -> bool:
        return not is_open_method(method)

    @contextmanager
    def scope(self, method: str, metadata: Metadata, context: grpc.ServicerContext) -> Iterator[None]:
        try:
            yield
        except FeedbackloopError as error:
            abort_with(context, error)
        except Exception as exc:
            if _context_code(context) not in (None, grpc.StatusCode.OK):
                raise  # the servicer already aborted with a status of its own
            if isinstance(exc, grpc.RpcError) and not context.is_active():
                # The client cancelled or the server is shutting down (a request stream raises
                # this when its call ends): nobody is left to answer, and it is not a fault here.
                log.info("%s ended before it finished: the call was cancelled", method)
                raise
            trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
            log.exception("internal error in %s (trace %s)", method, trace_id)
            status = status_pb2.Status(
                code=code_pb2.INTERNAL, message=f"internal error ({type(exc).__name__}); trace id {trace_id}"
            )
            context.abort_with_status(rpc_status.to_status(status))


class CachedKeyResolver:
    """Caches key lookups briefly so the hot ingest path does not hit the store per call.

    A revoked key stops working within `ttl_seconds`. Unknown keys are not cached: any caller can
    send endless distinct bogus keys, and each would stay in memory; a key created after a
    refused attempt also works at once.
    """

    def __init__(self, lookup: Callable[[str], auth.Principal | None], ttl_seconds: float = 30.0) -> None:
        self._lookup = lookup
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, auth.Principal]] = {}

    def __call__(self, key: str) -> auth.Principal | None:
        digest = auth.hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        principal = self._lookup(digest)
        if principal is None:
            self._cache.pop(digest, None)  # revoked since it was cached
        else:
            self._cache[digest] = (now, principal)
        return principal
