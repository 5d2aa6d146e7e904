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


# Exit status when the server could not be reached or did not answer in time: unlike a refusal
# (status 1), a retry may succeed, so a script (or the Helm chart's policy Job) can retry on 3
# and stop at once on 1.
EXIT_UNREACHABLE = 3
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def rpc_error_exit(error: grpc.RpcError) -> int:
    """Print a server error the way a user can act on it; exit status 1, or 3 when unreachable."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    print(f"error: {code.name if code else 'RPC'}: {details}", file=sys.stderr)
    return EXIT_UNREACHABLE if code in _RETRYABLE else 1
