"""The console's only way to the data: the public gRPC API, called with the signed-in key.

The console holds no store of its own and changes nothing except through these calls, so it
behaves the same against a standalone server and a distributed deployment, and the server's
own checks (scopes, tenancy, validation) are the ones that hold.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from feedbackloop.v1 import (
    datasets_pb2_grpc,
    identity_pb2_grpc,
    ingestion_pb2_grpc,
    prompts_pb2_grpc,
    recall_pb2_grpc,
    reviews_pb2_grpc,
    routing_pb2_grpc,
)

Response = TypeVar("Response", bound=Message)

# Long enough for a TopIssues over a large window, short enough that a page never hangs.
CALL_TIMEOUT_SECONDS = 30.0
# What a gRPC metadata value may hold: printable ASCII and space. gRPC fails a call carrying
# anything else inside the library, before sending it, with an error that is not a status.
_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")


def fits_metadata(value: str) -> bool:
    """Whether `value` (a key, a forwarded header) can travel as a gRPC metadata value."""
    return _METADATA_VALUE.fullmatch(value) is not None


@dataclass(frozen=True)
class BackendError(Exception):
    """A refused or failed call, as the page shows it."""

    code: grpc.StatusCode
    message: str

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def _metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    """The call's credentials: the key as a Bearer token, or none for a keyless call."""
    return (("authorization", f"Bearer {key}"),) if key else ()


def _refusal(error: grpc.aio.AioRpcError) -> BackendError:
    return BackendError(error.code(), error.details() or error.code().name)


class Backend:
    """One channel to the gRPC server, shared by every signed-in person; each call carries
    its caller's key. Created inside the console's event loop (`grpc.aio` binds to it)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel = grpc.aio.insecure_channel(target)
        self.ingestion = ingestion_pb2_grpc.IngestionServiceStub(self._channel)
        self.recall = recall_pb2_grpc.RecallServiceStub(self._channel)
        self.reviews = reviews_pb2_grpc.ReviewServiceStub(self._channel)
        self.prompts = prompts_pb2_grpc.PromptServiceStub(self._channel)
        self.routing = routing_pb2_grpc.RoutingServiceStub(self._channel)
        self.datasets = datasets_pb2_grpc.DatasetServiceStub(self._channel)
        self.identity = identity_pb2_grpc.IdentityServiceStub(self._channel)

    async def call(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Message,
        key: str | None,
        *,
        timeout: float = CALL_TIMEOUT_SECONDS,
    ) -> Response:
        """`method(request)` as the key's holder (keyless when `key` is None: only a loopback
        server that allows anonymous requests answers those)."""
        try:
            return await method(request, metadata=_metadata(key), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from error

    async def messages(
        self,
        method: Callable[..., Any],
        request: Message,
        key: str | None,
        *,
        idle_timeout: float = CALL_TIMEOUT_SECONDS,
    ) -> AsyncGenerator[Any, None]:
        """A server-streaming call's messages as they arrive, without holding them, as the key's
        holder (keyless as in `call`).

        The call as a whole has no deadline (an export of any size takes what it takes); each
        message must come within `idle_timeout` of the one before, so a stalled server still
        ends the call. Closing the iterator early cancels the call.
        """
        call = method(request, metadata=_metadata(key))
        responses = aiter(call)
        end = object()
        try:
            while True:
                try:
                    message = await asyncio.wait_for(anext(responses, end), idle_timeout)
                except TimeoutError:
                    raise BackendError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"the server sent nothing for {idle_timeout:g} s",
                    ) from None
                except grpc.aio.AioRpcError as error:
                    raise _refusal(error) from error
                if message is end:
                    return
                yield message
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close(None)
