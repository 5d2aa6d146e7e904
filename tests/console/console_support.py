"""Helpers for the console tests: a server with the console on, API keys, signing in, screenshots."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def running_console(data_dir: Path, embedder: Any, **overrides: Any) -> Iterator[tuple[Any, str]]:
    """A server with the console on a free port; yields (App, console base URL)."""
    from feedbackloop.config import Settings
    from feedbackloop.server import App

    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "policies_dir": POLICIES,
        "console": "on",
        "console_port": 0,
        "pipeline_poll_seconds": 0.05,
    }
    values.update(overrides)
    app = App(Settings(**values), embedder=embedder)
    app.start()
    try:
        assert app.console is not None, "the console did not start"
        yield app, f"http://127.0.0.1:{app.console.port}"
    finally:
        app.stop(grace=1.0)


def create_key(app: Any, *scopes: str, project: str = "default", reviewer: str = "") -> str:
    """A new API key on the server's store (`feedbackloop keys create`)."""
    from feedbackloop import auth
    from feedbackloop.store import keys

    return keys.create_key(
        app.db, project, frozenset(auth.Scope(scope) for scope in scopes), reviewer=reviewer
    )


def chromium_path() -> str | None:
    configured = os.environ.get("FEEDBACKLOOP_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def screenshot_dir() -> Path:
    """Where tests write screenshots (never committed): $FEEDBACKLOOP_SCREENSHOTS or screenshots/."""
    directory = Path(os.environ.get("FEEDBACKLOOP_SCREENSHOTS") or REPO / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def sign_in(page: Any, base_url: str, key: str | None = None) -> None:
    """Sign in through the form: with a key, or keyless on a loopback server."""
    page.goto(f"{base_url}/sign-in")
    if key is None:
        page.get_by_role("button", name="Continue without a key").click()
    else:
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/sign-in" not in url)
