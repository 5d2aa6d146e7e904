"""`feedbackloop db upgrade` run by two processes at once on a fresh database: one migrates, the
other waits for it (a PostgreSQL advisory lock; SQLite's BEGIN IMMEDIATE) and finds nothing to do.

Without the lock both create the same tables on PostgreSQL and one fails half-way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from feedbackloop.store.db import Database

REPO = Path(__file__).resolve().parents[3]
# Imports first, then waits for a shared start time, so both upgrades really overlap.
AT_ONCE = (
    "import sys, time\n"
    "from feedbackloop import cli\n"
    "go = float(sys.argv[1])\n"
    "time.sleep(max(go - time.time(), 0))\n"
    "sys.exit(cli.main(['db', 'upgrade', '--database-url', sys.argv[2]]))\n"
)


def test_two_upgrades_at_once_take_turns(store_url: str) -> None:
    go = time.time() + 5.0  # both interpreters have imported the CLI by then
    env = {**os.environ, "FEEDBACKLOOP_DATABASE_URL": ""}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", AT_ONCE, str(go), store_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in results]
    database = Database(store_url)
    try:
        head = database.head_revision()
        assert database.current_revision() == head
    finally:
        database.dispose()
    assert sorted(out for out, _ in results) == [
        f"database at revision {head}: nothing to do\n",
        f"database upgraded from revision none (empty) to {head}\n",
    ]
