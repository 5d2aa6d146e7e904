"""The CLI's exit status for a server error: 3 where a retry may succeed, 1 for a refusal.

A real gRPC server on loopback answers each call with the status a test names, details included,
as the feedbackloop server sends them (`grpc_status.rpc_status.to_status`).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from feedbackloop.client import EXIT_UNREACHABLE, rpc_error_exit

STATUSES: dict[str, status_pb2.Status] = {}


def _detail(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _answer(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort_with_status(rpc_status.to_status(STATUSES[request.decode()]))
    raise AssertionError("abort_with_status returns only by raising")


@pytest.fixture(scope="module")
def call() -> Iterator[Any]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(_answer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Errors", {"Fail": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel.unary_unary("/test.Errors/Fail")
    finally:
        channel.close()
        server.stop(None)


def _exit_of(
    call: Any, name: str, status: status_pb2.Status, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    STATUSES[name] = status
    with pytest.raises(grpc.RpcError) as raised:
        call(name.encode(), timeout=10)
    code = rpc_error_exit(raised.value)
    return code, capsys.readouterr().err


def test_a_busy_server_that_says_when_to_retry_exits_3_with_the_delay(
    call: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000))
    busy = status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message="every clustering slot is taken", details=[_detail(retry)]
    )
    code, err = _exit_of(call, "busy", busy, capsys)
    assert code == EXIT_UNREACHABLE == 3
    assert (
        err
        == "error: RESOURCE_EXHAUSTED: every clustering slot is taken (the server asks to retry in 2.5 s)\n"
    )


def test_resource_exhausted_without_a_retry_info_is_a_refusal(
    call: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message over the size limit will not fit on a retry either."""
    too_big = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="message larger than 4194304 bytes")
    code, err = _exit_of(call, "too-big", too_big, capsys)
    assert (code, err) == (1, "error: RESOURCE_EXHAUSTED: message larger than 4194304 bytes\n")


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        (code_pb2.UNAVAILABLE, 3),
        (code_pb2.DEADLINE_EXCEEDED, 3),
        (code_pb2.NOT_FOUND, 1),
        (code_pb2.INVALID_ARGUMENT, 1),
    ],
)
def test_other_codes_keep_their_exit_status(
    call: Any, capsys: pytest.CaptureFixture[str], status_code: int, expected: int
) -> None:
    name = f"code-{status_code}"
    code, err = _exit_of(call, name, status_pb2.Status(code=status_code, message="no"), capsys)
    assert code == expected
    assert err.startswith("error: ") and err.endswith(": no\n")


def test_field_violations_are_not_a_retry(call: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Details other than a RetryInfo (a BadRequest's field violations) do not make an error retryable."""
    violation = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="top_k", description="too large")]
    )
    bad = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message="top_k: too large", details=[_detail(violation)]
    )
    code, _ = _exit_of(call, "bad", bad, capsys)
    assert code == 1
