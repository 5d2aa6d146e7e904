"""Request decoding that refuses bad bytes as INVALID_ARGUMENT, naming the message and field.

gRPC decodes each request before any interceptor or servicer code runs. When the stock
deserializer raises, gRPC logs a traceback ("Exception deserializing message!") and answers
INTERNAL itself; on a client stream it also marks the call finished while the servicer still
runs, and the servicer's own reply then races that status: when it loses, the call never
completes and `server.stop(grace)` waits for it forever.

`DecodingInterceptor` replaces every handler's deserializer with one that never raises: a
message that does not decode becomes an `Undecodable` placeholder, and the handler refuses it
through the normal error path (after tracing and authentication, so an unauthenticated caller
learns nothing and the refusal is traced as a client fault). A client stream fails at the first
undecodable message, naming its position on the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from feedbackloop.errors import FieldViolation, InvalidArgument
from feedbackloop.interceptors import abort_with

log = logging.getLogger(__name__)

Deserializer = Callable[[bytes], Any]

# Far deeper than any message of the API nests; bounds the walk as protobuf bounds its parser.
MAX_DEPTH = 100


class UndecodableRequest(InvalidArgument):
    """A request message (or a message on a request stream) that is not valid protobuf."""


class Undecodable:
    """Stands in for a request message that did not decode, with the reason."""

    __slots__ = ("field", "reason", "type_name")

    def __init__(self, type_name: str, field: str, reason: str) -> None:
        self.type_name = type_name
        self.field = field
        self.reason = reason

    def error(self, position: int | None = None) -> UndecodableRequest:
        """The refusal; `position` is the message's zero-based index on a request stream."""
        if position is None:
            where, what = self.field or "request", f"the request is not a valid {self.type_name}"
        else:
            prefix = f"stream[{position}]"
            where = f"{prefix}.{self.field}" if self.field else prefix
            what = f"stream message {position} is not a valid {self.type_name}"
        return UndecodableRequest([FieldViolation(where, f"{self.reason}; {what}")])


def safe_deserializer(deserializer: Deserializer | None) -> Deserializer | None:
    """`deserializer`, returning an `Undecodable` instead of raising."""
    if deserializer is None:
        return None
    message_class = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None) if isinstance(message_class, type) else None
    type_name = descriptor.full_name if isinstance(descriptor, Descriptor) else "request message"

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            # The parser says only "bad UTF-8" or "wire format was corrupt"; walking the wire
            # format against the descriptor finds where.
            field, reason = locate_fault(descriptor, data) if isinstance(descriptor, Descriptor) else ("", "")
            return Undecodable(type_name, field, reason or "could not be decoded")

    return decode


def locate_fault(descriptor: Descriptor, data: bytes) -> tuple[str, str]:
    """(field path, reason) for the first fault in `data` read as `descriptor`; the path is
    empty when the fault is in the framing of the message itself."""
    try:
        _walk(descriptor, memoryview(data), "", 0)
    except _Fault as fault:
        return fault.path, fault.reason
    return "", ""


class _Fault(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def _varint(data: memoryview, pos: int, path: str) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise _Fault(path, "is truncated or has a malformed varint")


def _walk(descriptor: Descriptor, data: memoryview, prefix: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Fault(prefix, f"nests messages deeper than {MAX_DEPTH} levels")
    seen: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos, prefix)
        number, wire_type = tag >> 3, tag & 7
        field = descriptor.fields_by_number.get(number)
        name = field.name if field is not None else f"<field {number}>"
        path = f"{prefix}.{name}" if prefix else name
        if field is not None and field.is_repeated and not _is_map(field):
            index = seen.get(number, 0)
            seen[number] = index + 1
            path = f"{path}[{index}]"
        if number == 0:
            raise _Fault(prefix, "holds a field numbered 0")
        if wire_type == 0:
            _, pos = _varint(data, pos, path)
        elif wire_type == 1 or wire_type == 5:
            pos += 8 if wire_type == 1 else 4
            if pos > len(data):
                raise _Fault(path, "is truncated")
        elif wire_type == 2:
            length, pos = _varint(data, pos, path)
            end = pos + length
            if end > len(data):
                raise _Fault(path, "is truncated (its length runs past the end of the message)")
            _check_value(field, data[pos:end], path, depth)
            pos = end
        else:
            # Groups (3, 4) are proto2-only and unused by this API; 6 and 7 do not exist.
            raise _Fault(path, f"has an unsupported wire type {wire_type}")


def _is_map(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return message_type is not None and message_type.GetOptions().map_entry


def _check_value(field: FieldDescriptor | None, value: memoryview, path: str, depth: int) -> None:
    if field is None:
        return  # an unknown field: protobuf keeps its bytes without reading them
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            str(value, "utf-8")
        except UnicodeDecodeError as error:
            raise _Fault(path, f"is not valid UTF-8 at byte {error.start}") from None
    elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        _walk(field.message_type, value, path, depth + 1)


class _RequestStream:
    """A request iterator that raises `UndecodableRequest` at the first undecodable message."""

    def __init__(self, messages: Iterator[Any]) -> None:
        self._messages = messages
        self._position = 0

    def __iter__(self) -> _RequestStream:
        return self

    def __next__(self) -> Any:
        message = next(self._messages)
        position = self._position
        self._position += 1
        if isinstance(message, Undecodable):
            raise message.error(position)
        return message


@contextmanager
def _refusing(method: str, context: grpc.ServicerContext) -> Iterator[None]:
    try:
        yield
    except UndecodableRequest as error:
        # One line, no traceback: random bytes are a client fault, and a flood of them must not
        # flood the log.
        log.info("refused an undecodable request to %s: %s", method, error.message)
        abort_with(context, error)


class DecodingInterceptor(grpc.ServerInterceptor):
    """Installed last (innermost), so the refusal passes through error mapping and tracing."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler: Any = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        deserializer = safe_deserializer(handler.request_deserializer)
        serializer = handler.response_serializer

        def unary_request(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                with _refusing(method, context):
                    if isinstance(request, Undecodable):
                        raise request.error()
                    return behavior(request, context)

            return wrapped

        def unary_request_streamed(
            behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        ) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                with _refusing(method, context):
                    if isinstance(request, Undecodable):
                        raise request.error()
                    yield from behavior(request, context)

            return wrapped

        def stream_request(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def wrapped(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                with _refusing(method, context):
                    return behavior(_RequestStream(requests), context)

            return wrapped

        def stream_request_streamed(
            behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        ) -> Callable[..., Any]:
            def wrapped(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                with _refusing(method, context):
                    yield from behavior(_RequestStream(requests), context)

            return wrapped

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                unary_request(handler.unary_unary), deserializer, serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                unary_request_streamed(handler.unary_stream), deserializer, serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                stream_request(handler.stream_unary), deserializer, serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            stream_request_streamed(handler.stream_stream), deserializer, serializer
        )
