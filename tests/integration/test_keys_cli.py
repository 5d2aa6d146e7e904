"""`feedbackloop keys`: a key or a table on stdout, one line on stderr, never a migration log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from feedbackloop import cli
from feedbackloop.store import keys
from feedbackloop.store.db import Database

REPO = Path(__file__).resolve().parents[2]
PROJECT_RULE = "use 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedbackloop.cli", "keys", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "FEEDBACKLOOP_DATABASE_URL": ""},
    )


def test_keys_commands_print_no_migration_lines(tmp_path: Path) -> None:
    # A fresh store, so the first command also runs every migration.
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    made = _run(
        "create", "--project", "acme", "--scope", "review", "--reviewer", "alice", "--database-url", url
    )
    assert made.returncode == 0, made.stderr
    (key,) = made.stdout.splitlines()
    key_id = key.split("_")[1]
    assert made.stderr.splitlines() == [
        "# project acme, scopes review, reviews as alice. This key is shown once; store it now. "
        "Send it as 'authorization: Bearer <key>'."
    ]

    listed = _run("list", "--database-url", url)
    assert (listed.returncode, listed.stderr) == (0, "")
    (row,) = listed.stdout.splitlines()
    assert row.split("\t") == [key_id, "acme", "review", "alice", "active", ""]

    revoked = _run("revoke", key_id, "--database-url", url)
    assert (revoked.returncode, revoked.stderr) == (0, "")
    assert revoked.stdout == f"revoked {key_id} (servers stop accepting it within 30 s)\n"

    empty = _run("list", "--project", "globex", "--database-url", url)
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "no API keys in project globex\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", ""], f"error: --project: '' is not a valid project id: {PROJECT_RULE}"),
        (["--project", "ac me"], f"error: --project: 'ac me' is not a valid project id: {PROJECT_RULE}"),
        (["--project", "a/b"], f"error: --project: 'a/b' is not a valid project id: {PROJECT_RULE}"),
        (
            ["--project", "x" * 64],
            f"error: --project: {'x' * 64!r} is not a valid project id: {PROJECT_RULE}",
        ),
        (
            ["--project", "acme", "--reviewer", "key:0123456789ab"],
            "error: --reviewer: 'key:0123456789ab' is not a valid reviewer name: use 1 to 128 letters, "
            "digits, '.', '_', '@', '+' or '-', starting with a letter or digit",
        ),
    ],
)
def test_keys_create_refuses_malformed_names(
    db: Database, store_url: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = cli.main(["keys", "create", *args, "--scope", "review", "--database-url", store_url])
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", message + "\n")
    assert keys.list_keys(db) == []
