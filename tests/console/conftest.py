"""Fixtures for the web console: a real server with the real model, the default policies and the
console on, on loopback; API keys; and a real Chromium driven by Playwright.

`console_server` is one server per test module (starting one loads the model and applies the
policy set); tests in a module share its data, so each makes the items it needs. `browser` is
an HTTP client signed in to it keylessly, one per test. The Chromium browser (`chromium`,
`page`) is one per test session, a fresh context (cookies, storage) per test.

Chromium is Debian's (`/usr/bin/chromium`, or FEEDBACKLOOP_CHROMIUM): Playwright's own
browser download cannot run here. Without it the browser tests skip, unless
FEEDBACKLOOP_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from console_support import CHROMIUM_ARGS, chromium_path, running_console
from screens_support import Browser


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[tuple[Any, str]]:
    """(App, base URL): a fresh data dir, the real model, the default policies, the console on."""
    with running_console(tmp_path_factory.mktemp("console"), embedder) as started:
        yield started


@pytest.fixture
def browser(console_server: tuple[Any, str]) -> Iterator[Browser]:
    """An HTTP client signed in to `console_server` without a key (the loopback default project)."""
    b = Browser(console_server[1]).sign_in()
    yield b
    b.close()


def _no_browser(reason: str) -> None:
    if os.environ.get("FEEDBACKLOOP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (FEEDBACKLOOP_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A Chromium browser (Playwright, sync API) with a fresh user data dir."""
    executable = chromium_path()
    if executable is None:
        _no_browser("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed")
    with sync_playwright() as playwright:
        # launch() gives the browser a fresh temporary user data dir of its own, removed on close.
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context and page; page script errors fail the test."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    browser_page = context.new_page()
    errors: list[str] = []
    browser_page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield browser_page
    finally:
        context.close()
    assert not errors, f"script errors on the page: {errors}"
