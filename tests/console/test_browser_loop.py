"""The product team's side of the loop in a real Chromium: a prompt patch the policies proposed is
approved and the prompt's production version changes; the top issue it came from opens with its
plot. Against a real server with the real model and the default policies.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from console_support import PROMPT, create_key, production_version, propose_patch, screenshot_dir, sign_in
from playwright.sync_api import Page, expect


@pytest.fixture(scope="module")
def patch(console_server: tuple[Any, str]) -> Any:
    return propose_patch(console_server[0], model_version=f"m-{uuid.uuid4().hex[:6]}")


def test_approving_a_patch_makes_it_the_prompts_production_version(
    console_server: tuple[Any, str], page: Page, patch: Any
) -> None:
    app, base = console_server
    before = production_version(app)
    sign_in(page, base, create_key(app, "admin"))

    page.goto(f"{base}/prompts/{PROMPT}")
    expect(page.locator("[data-production]")).to_have_attribute("data-production", str(before))

    page.goto(f"{base}/patches")
    card = page.locator(f'article[id="{patch.id}"]')
    expect(card).to_be_visible()
    expect(card.locator(".status-proposed")).to_be_visible()
    page.screenshot(path=screenshot_dir() / "patches.png", full_page=True)
    with page.expect_navigation():
        card.get_by_role("button", name=f"Approve {patch.id}").click()

    notice = page.get_by_role("status").filter(has_text="Approved")
    expect(notice).to_contain_text(patch.id)
    after = production_version(app)
    assert after != before
    expect(notice).to_contain_text(f"production version {after}")

    page.goto(f"{base}/prompts/{PROMPT}")
    expect(page.locator("[data-production]")).to_have_attribute("data-production", str(after))
    row = page.locator(f"#version-{after}")
    expect(row.locator(".badge.production")).to_be_visible()
    expect(row.get_by_role("link", name=patch.id)).to_be_visible()
    page.screenshot(path=screenshot_dir() / "prompt.png", full_page=True)


def test_a_top_issue_opens_with_its_plot(console_server: tuple[Any, str], page: Page, patch: Any) -> None:
    app, base = console_server
    sign_in(page, base, create_key(app, "read"))
    page.goto(f"{base}/issues")
    groups = page.locator("ol.issues > li")
    expect(groups.first).to_be_visible()
    outdated = groups.filter(has_text=re.compile("outdated|out of date", re.I)).first
    size = outdated.locator(".size")
    expect(size).to_contain_text("complaints")
    assert int(size.inner_text().split()[0]) >= 2
    # uPlot draws each group's plot from its JSON block.
    expect(outdated.locator(".plot canvas")).to_have_count(1)
    page.screenshot(path=screenshot_dir() / "issues.png", full_page=True)

    with page.expect_navigation():
        outdated.locator("h2 a").click()
    assert re.search(r"/issues/[^/?]+", page.url)
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    plot = page.locator('.plot[data-plot="plot-group"]')
    expect(plot.locator("canvas")).to_have_count(1)
    expect(page.locator("figcaption").first).to_contain_text("complaints")
    # The members link to their sessions.
    expect(page.locator('a[href^="/sessions/"]').first).to_be_visible()
    page.screenshot(path=screenshot_dir() / "issue.png", full_page=True)
