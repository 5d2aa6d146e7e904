"""Shared fixtures: stores on SQLite and PostgreSQL, real servers on loopback, span capture.

Store-backed fixtures are parametrized over `sqlite` and, when FEEDBACKLOOP_TEST_POSTGRES_URL
is set, `postgres`. Each PostgreSQL test gets a database of its own, dropped afterwards, so a
run never leaves state behind for the next one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import make_url

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Test servers bind loopback, where the console is on by default, all on one port: tests that
# want it ask for it (FEEDBACKLOOP_CONSOLE=on with a free console port).
os.environ.setdefault("FEEDBACKLOOP_CONSOLE", "off")

POSTGRES_ENV = "FEEDBACKLOOP_TEST_POSTGRES_URL"
SPANS = InMemorySpanExporter()


def pytest_configure(config: pytest.Config) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    SPANS.clear()
    yield SPANS


def _backends() -> list[Any]:
    backends: list[Any] = ["sqlite"]
    if os.environ.get(POSTGRES_ENV):
        backends.append(pytest.param("postgres", marks=pytest.mark.postgres))
    return backends


@pytest.fixture(params=_backends())
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'feedbackloop.db'}"
        return
    yield from _fresh_postgres_database()


def _fresh_postgres_database() -> Iterator[str]:
    import psycopg

    base = make_url(os.environ[POSTGRES_ENV])
    name = f"fl_test_{uuid.uuid4().hex[:12]}"
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(store_url: str) -> Iterator[Any]:
    from feedbackloop.store.db import Database

    database = Database(store_url)
    database.upgrade()
    yield database
    database.dispose()


class RunningServer:
    """An in-process server on an ephemeral loopback port, with a channel to it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.address = f"127.0.0.1:{app.port}"
        self.channel = grpc.insecure_channel(self.address)

    def stub(self, stub_class: Callable[[grpc.Channel], Any]) -> Any:
        return stub_class(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.app.stop(grace=1.0)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory: `make_server(database_url=..., **settings)` starts a real server on port 0 and
    returns once it is ready (`wait_ready=False`: at once, as when Milvus is meant to be down)."""
    from feedbackloop.config import Settings
    from feedbackloop.server import App

    started: list[RunningServer] = []

    def start(embedder: Any = None, wait_ready: bool = True, **overrides: Any) -> RunningServer:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "data_dir": tmp_path / f"data{len(started)}",
            "pipeline_enabled": False,
            "policies_dir": None,
        }
        values.update(overrides)
        app = App(Settings(**values), embedder=embedder)
        app.start(wait_ready=wait_ready)
        server = RunningServer(app)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.close()


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real bundled all-MiniLM-L6-v2, loaded once per test session."""
    from feedbackloop.recall.embedder import Embedder

    return Embedder().load()


@pytest.fixture
def server(make_server: Callable[..., RunningServer], store_url: str) -> RunningServer:
    """A server on each store backend, loopback, keyless default project, no pipeline."""
    return make_server(database_url=store_url)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures tests record (e.g. recall quality on the labeled data) in every run."""
    lines = []
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "") == "call":
                lines.extend(f"{report.nodeid}: {name} = {value}" for name, value in report.user_properties)
    if lines:
        terminalreporter.write_sep("-", "figures recorded by tests")
        for line in lines:
            terminalreporter.write_line(line)
