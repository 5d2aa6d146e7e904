"""Processes opening one fresh SQLite file at the same moment all get a working connection.

Each connection switches the file to WAL; SQLite refuses the loser of that race with `database
is locked` at once (no busy wait), which made one of two concurrent `db upgrade` runs fail.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

OPEN_AT_ONCE = (
    "import sys, time\n"
    "from feedbackloop.store.db import Database\n"
    "database = Database(sys.argv[2])\n"
    "go = float(sys.argv[1])\n"
    "time.sleep(max(go - time.time(), 0))\n"
    "with database.write_connection() as connection:\n"
    "    connection.exec_driver_sql('CREATE TABLE IF NOT EXISTS opened (pid INTEGER)')\n"
    "    connection.exec_driver_sql('INSERT INTO opened VALUES (1)')\n"
)

PROCESSES = 4
ROUNDS = 5  # the race is lost in most rounds without the retry; five make a miss unlikely


def test_processes_opening_a_fresh_file_at_once_all_succeed(tmp_path: Path) -> None:
    for round_number in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'race{round_number}.db'}"
        go = time.time() + 2.0  # every interpreter has imported the store by then
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AT_ONCE, str(go), url],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(PROCESSES)
        ]
        errors = [proc.communicate(timeout=60)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * PROCESSES, [e[-800:] for e in errors]
