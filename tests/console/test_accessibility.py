"""Accessibility basics of the main screens, in a real Chromium: every interactive control is
reached by Tab, every control has an accessible name in the browser's own accessibility tree
(Chrome DevTools' Accessibility domain), and each screen has one top-level heading.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from console_support import (
    PROMPT,
    SAFETY_QUEUE,
    create_key,
    propose_patch,
    screenshot_dir,
    sign_in,
    submit_unsafe,
    wait_queued,
)
from playwright.sync_api import Page

# Roles a person operates; each needs a name a screen reader can say.
CONTROL_ROLES = {
    "button",
    "checkbox",
    "combobox",
    "link",
    "listbox",
    "menuitem",
    "radio",
    "searchbox",
    "slider",
    "spinbutton",
    "switch",
    "tab",
    "textbox",
}

# Marks every visible, enabled interactive element with data-a11y, and returns how it is known.
MARK_CONTROLS = """() => {
  const selector = 'a[href], button, input:not([type="hidden"]), select, textarea, summary,' +
    ' [tabindex]:not([tabindex="-1"])';
  const found = [];
  document.querySelectorAll(selector).forEach((el) => {
    if (el.disabled || !el.checkVisibility({visibilityProperty: true})) return;
    const index = found.length;
    el.setAttribute("data-a11y", String(index));
    const group = el.type === "radio" ? "radio:" + el.name : "el:" + index;
    found.push({index, group, html: el.outerHTML.slice(0, 120)});
  });
  return found;
}"""
ACTIVE = "() => document.activeElement && document.activeElement.getAttribute('data-a11y')"


@pytest.fixture(scope="module")
def screens(console_server: tuple[Any, str]) -> dict[str, str]:
    """Data for every main screen to show something; the screens' paths by name."""
    app, _ = console_server
    session_id, feedback_id = submit_unsafe(
        app, "it told me to share my password", correction="Never share your password with anyone."
    )
    wait_queued(app, [feedback_id])
    propose_patch(app, model_version=f"a11y-{uuid.uuid4().hex[:6]}")
    return {
        "queues": "/reviews",
        "review": f"/reviews/{SAFETY_QUEUE}",
        "issues": "/issues",
        "search": "/search?q=outdated+price",
        "session": f"/sessions/{session_id}",
        "patches": "/patches",
        "prompt": f"/prompts/{PROMPT}",
        "policies": "/policies",
        "trends": "/trends",
        "datasets": "/datasets",
        "dataset": "/datasets/support-corrections",
    }


@pytest.fixture
def admin_page(console_server: tuple[Any, str], page: Page) -> Iterator[Page]:
    app, base = console_server
    sign_in(page, base, create_key(app, "admin", reviewer=f"a11y-{uuid.uuid4().hex[:6]}"))
    yield page


def ax_nodes(page: Page) -> list[dict[str, Any]]:
    cdp = page.context.new_cdp_session(page)
    try:
        nodes: list[dict[str, Any]] = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    return [node for node in nodes if not node.get("ignored")]


def _value(node: dict[str, Any], key: str) -> str:
    return str((node.get(key) or {}).get("value") or "")


def check_names_and_headings(page: Page, where: str) -> None:
    nodes = ax_nodes(page)
    unnamed = [
        f"{_value(n, 'role')} (backend node {n.get('backendDOMNodeId')})"
        for n in nodes
        if _value(n, "role") in CONTROL_ROLES and not _value(n, "name").strip()
    ]
    assert unnamed == [], f"{where}: controls without an accessible name: {unnamed}"
    levels = [
        int(prop["value"]["value"])
        for n in nodes
        if _value(n, "role") == "heading"
        for prop in n.get("properties", [])
        if prop["name"] == "level"
    ]
    assert levels.count(1) == 1, f"{where}: expected one level-1 heading, got levels {levels}"
    assert sum(1 for n in nodes if _value(n, "role") in CONTROL_ROLES) > 0


def check_tab_reaches_every_control(page: Page, where: str) -> None:
    controls = page.evaluate(MARK_CONTROLS)
    assert controls, f"{where}: no controls"
    groups = {c["group"] for c in controls}
    reached: set[str] = set()
    by_index = {str(c["index"]): c["group"] for c in controls}
    page.locator("body").focus()
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    # A radio group is one Tab stop (arrows move within it), so groups, not elements, are counted.
    for _ in range(len(controls) + 5):
        page.keyboard.press("Tab")
        active = page.evaluate(ACTIVE)
        if active is not None:
            reached.add(by_index[active])
        if reached == groups:
            break
    missing = [c["html"] for c in controls if c["group"] not in reached]
    assert missing == [], f"{where}: not reachable with Tab: {missing}"


def test_the_sign_in_screen(console_server: tuple[Any, str], page: Page) -> None:
    _, base = console_server
    page.goto(base + "/sign-in")
    # The key field has the focus at once.
    assert page.evaluate("() => document.activeElement.id") == "api_key"
    check_names_and_headings(page, "sign-in")
    check_tab_reaches_every_control(page, "sign-in")


@pytest.mark.parametrize(
    "screen",
    [
        "queues",
        "review",
        "issues",
        "search",
        "session",
        "patches",
        "prompt",
        "policies",
        "trends",
        "datasets",
        "dataset",
    ],
)
def test_a_main_screen(
    console_server: tuple[Any, str], admin_page: Page, screens: dict[str, str], screen: str
) -> None:
    _, base = console_server
    response = admin_page.goto(base + screens[screen])
    assert response is not None and response.status == 200, f"{screen}: {response and response.status}"
    # The first Tab stop skips the navigation.
    admin_page.keyboard.press("Tab")
    assert admin_page.evaluate("() => document.activeElement.textContent.trim()") == "Skip to content"
    if screen == "review":
        with admin_page.expect_navigation():
            admin_page.keyboard.press("n")
        assert admin_page.locator("#item").count() == 1, "no item to review"
    check_names_and_headings(admin_page, screen)
    check_tab_reaches_every_control(admin_page, screen)
    admin_page.screenshot(path=screenshot_dir() / f"screen-{screen}.png", full_page=True)
