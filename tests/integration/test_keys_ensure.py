"""`feedbackloop keys ensure --from-env VAR`: a deployment registers the key it keeps in a Secret.

Idempotent (a hook runs it on every upgrade), never prints the key, refuses a malformed,
revoked or differently-scoped one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from feedbackloop import cli
from feedbackloop.store import keys
from feedbackloop.store.db import Database
from feedbackloop.v1 import ingestion_pb2, ingestion_pb2_grpc
from support import bearer, code_of

KEY = "fbl_0123456789ab_" + "S3cret-" * 6  # the form the chart generates
VAR = "FEEDBACKLOOP_BOOTSTRAP_KEY"


def ensure(store_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    argv = ["keys", "ensure", "--project", "default", "--scope", "admin", "--from-env", VAR]
    code = cli.main([*argv, *args, "--database-url", store_url])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_given_key_is_registered_once_and_then_authenticates(
    store_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    make_server: Callable[..., Any],
) -> None:
    monkeypatch.setenv(VAR, KEY)
    assert ensure(store_url, capsys) == (0, "created key 0123456789ab (project default, scopes admin)\n", "")
    assert ensure(store_url, capsys) == (0, "kept key 0123456789ab (project default, scopes admin)\n", "")
    db = Database(store_url)
    try:
        assert [(k.id, k.project_id, k.scopes) for k in keys.list_keys(db)] == [
            ("0123456789ab", "default", "admin")
        ]
    finally:
        db.dispose()
    server = make_server(database_url=store_url, allow_anonymous_loopback=False)
    stub = ingestion_pb2_grpc.IngestionServiceStub(server.channel)
    assert stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(), metadata=bearer(KEY)).feedback == []
    code, _ = code_of(
        lambda: stub.ListFeedback(ingestion_pb2.ListFeedbackRequest(), metadata=bearer(KEY + "x"))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", f"error: --from-env: the environment variable {VAR} is not set or empty\n"),
        (
            "fbl_short_tooshort",
            f"error: --from-env {VAR}: not a key of the form fbl_<id>_<secret>: the id 6 to 32 lowercase "
            "letters or digits, the secret 32 to 256 letters, digits, '_' or '-'\n",
        ),
    ],
)
def test_a_missing_or_malformed_key_is_refused_without_echoing_it(
    store_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(VAR, value)
    assert ensure(store_url, capsys) == (2, "", message)


def test_a_revoked_or_differently_scoped_key_is_refused(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VAR, KEY)
    assert ensure(store_url, capsys)[0] == 0
    assert ensure(store_url, capsys, "--scope", "read") == (
        1,
        "",
        "error: key 0123456789ab exists with project default, scopes admin; revoke it to change them\n",
    )
    db = Database(store_url)
    try:
        assert keys.revoke_key(db, "0123456789ab")
    finally:
        db.dispose()
    assert ensure(store_url, capsys) == (
        1,
        "",
        "error: key 0123456789ab was revoked; put a new key in its place\n",
    )
    # Another secret under the same id is another key.
    monkeypatch.setenv(VAR, "fbl_0123456789ab_" + "0ther-" * 7)
    assert ensure(store_url, capsys) == (1, "", "error: key id 0123456789ab belongs to another key\n")
