"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL.

SQLite allows one writer at a time. Write transactions therefore start with
`BEGIN IMMEDIATE` (so a transaction that reads then writes can never fail half-way with
SQLITE_BUSY_SNAPSHOT) and are serialized in-process by a lock, so threads queue on a mutex
instead of sleeping in SQLite's busy handler. PostgreSQL needs neither.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Rows ANALYZE samples per index: enough for the planner to see that one project holds most
# rows, and a bounded cost (about 20 ms on 100k feedback) however large the file grows.
SQLITE_ANALYSIS_LIMIT = 1000
# The PostgreSQL advisory lock `upgrade` holds: any fixed 64-bit number, the same in every
# feedbackloop process ("fbloop" in ASCII), so that two upgrades of one database take turns.
MIGRATION_LOCK_ID = 0x6662_6C6F_6F70


def _enter_wal_mode(cursor: sqlite3.Cursor) -> None:
    """`PRAGMA journal_mode=WAL`, waiting while another process switches the same file.

    Two processes opening a fresh file at once (`db upgrade` beside `serve`, two upgrades) both
    try to switch it; SQLite answers one of them `database is locked` at once, without calling
    the busy handler, since waiting could deadlock. Retrying is safe: once the file is in WAL
    mode the pragma only reads it.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def safe_url(url: str) -> str:
    """`url` with its password, if any, replaced by `***`: for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Database:
    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL") -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            self._ensure_sqlite_dir(url)
            self.read_engine = self._sqlite_engine(url, sqlite_synchronous, immediate=False)
            self.write_engine = self._sqlite_engine(url, sqlite_synchronous, immediate=True)
        else:
            self.read_engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            self.write_engine = self.read_engine
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self.write_engine, expire_on_commit=False)
        self._write_lock: threading.Lock | None = threading.Lock() if self.is_sqlite else None

    @staticmethod
    def _ensure_sqlite_dir(url: str) -> None:
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _sqlite_engine(url: str, synchronous: str, *, immediate: bool) -> Engine:
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control from the driver so BEGIN is ours to choose.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            _enter_wal_mode(cursor)
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction, committed on exit, rolled back on error."""
        with self._write_lock or nullcontext(), self._write_sessions() as session, session.begin():
            yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A Core connection in one write transaction: for hot paths that need no ORM objects
        (the ORM session's per-statement bookkeeping was most of the ingest writer's time)."""
        with self._write_lock or nullcontext(), self.write_engine.begin() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read_sessions() as session, session.begin():
            yield session

    def refresh_statistics(self) -> bool:
        """SQLite: refresh the planner's statistics (a bounded ANALYZE); True when it ran.

        Without statistics SQLite assumes an equality on an index's first column picks about ten
        rows, so it may walk a whole project's index where another index would do (the id lookups
        in `store.lookups` avoid depending on this). PostgreSQL keeps its own statistics
        (autovacuum's ANALYZE): nothing to do.
        """
        if not self.is_sqlite:
            return False
        with self.write_connection() as connection:
            connection.exec_driver_sql(f"PRAGMA analysis_limit={SQLITE_ANALYSIS_LIMIT}")
            connection.exec_driver_sql("ANALYZE")
        return True

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()

    # --- migrations ---

    def _alembic_config(self) -> Config:
        config = Config()
        script_location = resources.files("feedbackloop.store") / "migrations"
        config.set_main_option("script_location", str(script_location))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return config

    def upgrade(self, revision: str = "head") -> str | None:
        """Migrate to `revision` in one transaction; safe to run from several processes at once.

        Two upgrades of a fresh PostgreSQL database would both create the same tables, and one
        would fail half-way. So on PostgreSQL the transaction first takes an advisory lock (held
        until it commits or rolls back): a second upgrade waits, then finds the schema at its
        target and does nothing. On SQLite the transaction's `BEGIN IMMEDIATE` does the same.
        Returns the revision the schema was at, read under that lock (None: an empty database).
        """
        config = self._alembic_config()
        with self._write_lock or nullcontext(), self.write_engine.connect() as connection:
            if not self.is_sqlite:
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            else:
                connection.exec_driver_sql("SELECT 1")  # begins the transaction: BEGIN IMMEDIATE
            before = MigrationContext.configure(connection).get_current_revision()
            # Alembic runs inside the transaction already begun (it begins none of its own).
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
        return before

    def ping(self) -> None:
        """Raise unless the database answers a query."""
        with self.read_engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def current_revision(self) -> str | None:
        with self.read_engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def migration_scripts(self) -> list[Script]:
        """Every migration this code knows, newest first."""
        return list(ScriptDirectory.from_config(self._alembic_config()).walk_revisions())

    def is_empty(self) -> bool:
        with self.read_engine.connect() as connection:
            return not inspect(connection).get_table_names()
