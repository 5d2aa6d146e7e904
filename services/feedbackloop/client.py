"""Client-side helpers for the CLI: a channel to a running server with the API key attached."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import grpc

DEFAULT_SERVER = "127.0.0.1:50051"
KEY_ENV = "FEEDBACKLOOP_API_KEY"
SERVER_ENV = "FEEDBACKLOOP_SERVER"


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", default=os.environ.get(SERVER_ENV, DEFAULT_SERVER), help=f"host:port (${SERVER_ENV})"
    )
    parser.add_argument("--key", default=os.environ.get(KEY_ENV), help=f"API key (${KEY_ENV})")
    parser.add_argument("--project", default="", help="project (default: the key's project)")


class _KeyInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, key: str) -> None:
        self._metadata = (("authorization", f"Bearer {key}"),)

    def _details(self, details: Any) -> Any:
        metadata = tuple(details.metadata or ()) + self._metadata
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def channel(args: argparse.Namespace) -> grpc.Channel:
    base = grpc.insecure_channel(args.server)
    return grpc.intercept_channel(base, _KeyInterceptor(args.key)) if args.key else base


# Exit status when the server could not be reached, did not answer in time, or asked to be
# called again later (a RetryInfo, as a busy clustering gate sends): unlike a refusal (status 1),
# a retry may succeed, so a script (or the Helm chart's policy Job) can retry on 3 and stop at
# once on 1.
EXIT_UNREACHABLE = 3
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def rpc_error_exit(error: grpc.RpcError) -> int:
    """Print a server error the way a user can act on it; exit status 1, or 3 when a retry may
    succeed (unreachable, out of time, or the server's RetryInfo says when to try again)."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    retry_in = retry_delay(error)
    hint = f" (the server asks to retry in {retry_in:g} s)" if retry_in is not None else ""
    print(f"error: {code.name if code else 'RPC'}: {details}{hint}", file=sys.stderr)
    return EXIT_UNREACHABLE if code in _RETRYABLE or retry_in is not None else 1


def retry_delay(error: grpc.RpcError) -> float | None:
    """Seconds the server's RetryInfo asks a caller to wait before retrying, if it sent one."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    if not isinstance(error, grpc.Call):
        return None
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # status details that contradict the call's own code: not trusted
        return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None
