"""The console's request limits: one cap on every request body (413 with the reason, before the
handler reads the body whole), the JSON endpoint's own lower cap (a Connect error, which a
listed origin's page can read), and the apply form's limit, which every set a plan accepts fits.

The gRPC server behind is unreachable: these are refused, or not, before any call is made.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from feedbackloop.console import connect
from feedbackloop.console.app import MAX_REQUEST_BYTES, ConsoleConfig, build_app
from feedbackloop.console.pages import policies, policy_upload
from feedbackloop.console.runner import ConsoleServer
from feedbackloop.console.security import CSRF_FIELD, SIGN_IN_COOKIE, BodyLimit
from feedbackloop.console.web import UnreadableForm, read_form
from feedbackloop.policy.loader import MAX_SET_BYTES
from feedbackloop.v1 import routing_pb2

CAP = 1000


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def capped() -> tuple[TestClient, list[int]]:
    """A small app behind BodyLimit(CAP) whose one route reads the whole body."""
    seen: list[int] = []

    async def echo(request: Request) -> PlainTextResponse:
        body = await request.body()
        seen.append(len(body))
        return PlainTextResponse(str(len(body)))

    app = Starlette(routes=[Route("/", echo, methods=["POST"])])
    app.add_middleware(BodyLimit, max_bytes=CAP)
    return TestClient(app), seen


def _pieces(body: bytes, size: int = 256) -> Iterator[bytes]:
    """The body as a client sends one it cannot size up front: chunked, no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_body_at_the_cap_is_read_and_one_byte_over_is_413(capped: tuple[TestClient, list[int]]) -> None:
    client, seen = capped
    assert client.post("/", content=b"x" * CAP).text == str(CAP)
    over = client.post("/", content=b"x" * (CAP + 1))
    assert over.status_code == 413
    assert over.text == f"request body: larger than {CAP:,} bytes, the most the console accepts"
    assert seen == [CAP]  # the declared length alone refused it: the handler never ran


def test_a_chunked_body_is_counted_as_it_arrives(capped: tuple[TestClient, list[int]]) -> None:
    client, seen = capped
    assert client.post("/", content=_pieces(b"x" * CAP)).text == str(CAP)
    over = client.post("/", content=_pieces(b"x" * (CAP + 1)))
    assert over.status_code == 413 and "larger than 1,000 bytes" in over.text
    assert seen == [CAP]  # the handler stopped reading at the cap and answered nothing itself


@pytest.fixture
def console() -> Iterator[TestClient]:
    app = build_app(ConsoleConfig(target=f"127.0.0.1:{_closed_port()}", loopback_only=False))
    with TestClient(app, base_url="http://testserver") as client:
        yield client


def _form_of(total: int, token: str) -> tuple[bytes, str]:
    """A multipart sign-in form of exactly `total` bytes, most of them padding fields, each within
    what a field of sign-in's form may hold (so the form is read whole, if the cap lets it)."""
    boundary = "limit-boundary"
    piece = 512 * 1024
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{CSRF_FIELD}"\r\n\r\n{token}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="api_key"\r\n\r\nfl_test\r\n'
    ).encode()
    pad = f'--{boundary}\r\nContent-Disposition: form-data; name="pad"\r\n\r\n'.encode()
    tail = f"--{boundary}--\r\n".encode()
    body = bytearray(head)
    while (left := total - len(body) - len(tail)) > 0:
        size = min(piece, left - len(pad) - 2)
        assert size >= 0, "no room for one more field"
        body += pad + b"x" * size + b"\r\n"
    body += tail
    assert len(body) == total
    return bytes(body), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("size", [MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 1])
def test_the_console_caps_every_request_body(console: TestClient, size: int) -> None:
    """Starlette alone takes a thousand fields of a megabyte each, and files of any size (to
    disk): the console takes no body over its cap, whatever the route does with it. Sent
    chunked, so only counting what arrives can refuse it."""
    assert console.get("/sign-in").status_code == 200
    token = console.cookies.get(SIGN_IN_COOKIE)
    assert token
    body, content_type = _form_of(size, token)
    reply = console.post(
        "/sign-in",
        content=_pieces(body, 1 << 20),
        headers={"content-type": content_type, "origin": "http://testserver"},
    )
    if size <= MAX_REQUEST_BYTES:  # read whole: sign-in goes on to ask the (unreachable) server
        assert reply.status_code == 503 and "did not answer" in reply.text
        return
    assert reply.status_code == 413, reply.text
    assert (
        reply.text == f"request body: larger than {MAX_REQUEST_BYTES:,} bytes, the most the console accepts"
    )
    assert reply.headers["x-frame-options"] == "DENY"  # the guards' headers on the refusal too


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_sent() -> None:
    """Over a real socket: only the headers are sent; the answer comes without waiting for a
    body that never comes."""
    server = ConsoleServer(ConsoleConfig(target=f"127.0.0.1:{_closed_port()}"), "127.0.0.1", 0)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(
                b"POST /sign-in HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {MAX_REQUEST_BYTES + 1}\r\n\r\n".encode()
            )
            answer = b""
            while b"the most the console accepts" not in answer:
                piece = conn.recv(4096)
                assert piece, answer
                answer += piece
        assert answer.startswith(b"HTTP/1.1 413 "), answer
    finally:
        server.stop()


SHOP = "https://shop.example"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_json_request_over_its_cap_is_a_connect_error_the_listed_origin_can_read(chunked: bool) -> None:
    """Over the console's own cap too: the JSON endpoint answers Connect's error JSON with its
    CORS headers, not the pages' plain-text 413, which a page on another origin cannot read."""
    size = MAX_REQUEST_BYTES + 1
    body = b'{"sessionId": "' + b"x" * (size - 17) + b'"}'
    assert len(body) == size
    config = ConsoleConfig(target=f"127.0.0.1:{_closed_port()}", loopback_only=False, cors_origins=(SHOP,))
    with TestClient(build_app(config), base_url="http://testserver") as client:
        reply = client.post(
            "/feedbackloop.v1.IngestionService/GetSession",
            content=_pieces(body, 1 << 20) if chunked else body,
            headers={"content-type": "application/json", "origin": SHOP},
        )
    limit = connect.MAX_BODY_BYTES
    expected = (
        f"body: larger than the limit of {limit} bytes"
        if chunked
        else f"body: {size} bytes; the limit is {limit}"
    )
    assert (reply.status_code, reply.headers["content-type"]) == (429, "application/json"), reply.text
    assert reply.json() == {"code": "resource_exhausted", "message": expected}
    assert reply.headers["access-control-allow-origin"] == SHOP
    assert reply.headers["x-frame-options"] == "DENY"  # the guards' headers as on every answer


def test_only_the_json_endpoints_paths_are_left_to_its_cap() -> None:
    assert connect.serves("/feedbackloop.v1.IngestionService/GetSession")
    assert connect.serves("/feedbackloop.v1.NoSuchService/Anything")  # answered 404 there, unread
    for path in ["/sign-in", "/policies/apply", "/feedbackloop.v1.IngestionService/GetSession/more", "/x/y"]:
        assert not connect.serves(path), path


def _browser_encoded(value: str) -> int:
    """Bytes of `files_json=value` as a browser url-encodes a form."""
    return len(urlencode({"files_json": value}).encode())


@pytest.mark.parametrize(
    ("character", "most"),
    [
        ("\x01", 8),  # JSON's longest escape, \u0001, then %5Cu0001
        ('"', 6),  # \" then %5C%22
        ("é", 6),  # two bytes, each %XX
        ("\U0001f600", 12),  # four bytes
        ("a", 1),
    ],
)
def test_a_character_grows_at_most_eightfold_a_byte_in_the_apply_form(character: str, most: int) -> None:
    """What PLANNED_FIELD_BYTES counts on, character by character: JSON escaping, then the
    browser's url-encoding (the form's enctype)."""
    empty = _browser_encoded(policy_upload.files_json([routing_pb2.PolicyFile(path="p", content="")]))
    file = routing_pb2.PolicyFile(path="p", content=character * 1000)
    grown = _browser_encoded(policy_upload.files_json([file])) - empty
    assert grown == most * 1000 <= 8 * len(file.content.encode())


@pytest.fixture
def apply_reader() -> TestClient:
    """An app that reads its form as the apply action does (`read_form` with APPLY_FORM) behind
    the console's body cap, answering each field's digest, or the refusal."""

    async def read(request: Request) -> Response:
        try:
            form = await read_form(request, policies.APPLY_FORM)
        except UnreadableForm as refused:
            return PlainTextResponse(refused.message, status_code=refused.status)
        return JSONResponse({name: _digest(value) for name, value in form.items() if isinstance(value, str)})

    app = Starlette(routes=[Route("/", read, methods=["POST"])])
    app.add_middleware(BodyLimit, max_bytes=MAX_REQUEST_BYTES)
    return TestClient(app)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _post_form(client: TestClient, form: dict[str, str]) -> Any:
    return client.post(
        "/", content=urlencode(form).encode(), headers={"content-type": "application/x-www-form-urlencoded"}
    )


def test_the_largest_set_a_plan_accepts_fits_the_apply_form(apply_reader: TestClient) -> None:
    """The worst case at full size: as many files as the server takes, the longest names of
    four-byte characters, the whole set's bytes of the character that grows most. The field
    fits the apply form's limit, and the whole form (with the longest note of the characters
    that grow most) is read within the form's limits and the body cap, so apply never refuses a
    set the plan step took; one byte more and the plan step refuses it, naming the field."""
    count = policy_upload.MAX_PLANNED_FILES
    files = [
        routing_pb2.PolicyFile(
            path=f"{i:04d}" + "\U0001f600" * (policy_upload.MAX_PATH_CHARS - 4),
            content="\x01" * (MAX_SET_BYTES // count),
        )
        for i in range(count)
    ]
    files[0].content += "\x01" * (MAX_SET_BYTES - sum(len(f.content) for f in files))
    upload = policy_upload.checked(policy_upload.Upload(files, None))
    planned = policy_upload.files_json(upload.files)
    encoded = _browser_encoded(planned)
    assert encoded <= policies.APPLY_FORM.max_part_size
    assert policy_upload.PLANNED_FIELD_BYTES - encoded < 64 * 1024  # a bound, not a guess
    form = {
        CSRF_FIELD: secrets.token_urlsafe(32),
        "files_json": planned,
        "expected_revision": str(2**63 - 1),
        "message": "\U0001f600" * policies.MAX_MESSAGE_CHARS,
    }
    read = _post_form(apply_reader, form)
    assert read.status_code == 200, read.text[:300]
    assert read.json() == {name: _digest(value) for name, value in form.items()}
    files[0].content += "\x01"
    with pytest.raises(
        policy_upload.UploadError,
        match=r"^files: the policy set is 4,194,305 bytes; the limit for a set is 4,194,304$",
    ):
        policy_upload.checked(policy_upload.Upload(files, None))


def test_the_apply_forms_field_limit_holds_to_the_byte(apply_reader: TestClient) -> None:
    """A field counts its name and value as sent: at the limit it is read, one byte more is a
    400 saying which limit."""
    limit = policies.APPLY_FORM.max_part_size
    at_limit = {"files_json": "x" * (limit - len("files_json"))}
    assert _post_form(apply_reader, at_limit).json() == {"files_json": _digest(at_limit["files_json"])}
    over = _post_form(apply_reader, {"files_json": "x" * (limit - len("files_json") + 1)})
    assert over.status_code == 400
    assert over.text == f"The form could not be read: Field exceeded maximum size of {limit // 1024}KB."


def test_a_plan_of_more_files_or_longer_names_than_the_server_takes_is_refused() -> None:
    many = [
        routing_pb2.PolicyFile(path=f"p{i}.yaml", content="")
        for i in range(policy_upload.MAX_PLANNED_FILES + 1)
    ]
    with pytest.raises(policy_upload.UploadError, match=r"^files: the set has 501 files; the limit is 500$"):
        policy_upload.checked(policy_upload.Upload(many, None))
    long_name = [routing_pb2.PolicyFile(path="a" * (policy_upload.MAX_PATH_CHARS + 1), content="")]
    with pytest.raises(policy_upload.UploadError, match=r"is 1025 characters long; the limit is 1024$"):
        policy_upload.checked(policy_upload.Upload(long_name, 0))
