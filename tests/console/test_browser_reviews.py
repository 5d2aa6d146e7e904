"""The review screen in a real Chromium, against a real server with the real model and the default
policies: a reviewer works a queue with the keyboard alone, skips, releases, and the open page
keeps its lease.

Items come from `unsafe` thumbs down, which the default policies send to the safety queue (two
reviews each). Tests share the module's server, so each signs in as a reviewer of its own and
reads which item it was given from the page.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from console_support import (
    SAFETY_QUEUE,
    get_feedback,
    get_session,
    reviewer_key,
    screenshot_dir,
    sign_in,
    submit_unsafe,
    wait_queued,
)
from playwright.sync_api import Page, expect

from feedbackloop.v1 import common_pb2

SCREEN = f"/reviews/{SAFETY_QUEUE}"


def shown_item(page: Page) -> str:
    item = page.locator("#item")
    expect(item).to_be_visible()
    item_id = item.get_attribute("data-item-id")
    assert item_id
    return item_id


def press_and_wait(page: Page, key: str) -> None:
    """A key that submits a form: wait for the page it leads to."""
    with page.expect_navigation():
        page.keyboard.press(key)


def test_keyboard_only_review_resolves_and_the_next_item_comes(
    console_server: tuple[Any, str], page: Page
) -> None:
    app, base = console_server
    _, first_feedback = submit_unsafe(app, "it told me to email my password")
    _, second_feedback = submit_unsafe(app, "it printed another customer's address")
    wait_queued(app, [first_feedback, second_feedback])

    sign_in(page, base, reviewer_key(app))
    page.goto(base + "/reviews")
    expect(page.get_by_role("link", name=SAFETY_QUEUE)).to_be_visible()
    page.screenshot(path=screenshot_dir() / "review-queues.png", full_page=True)

    page.goto(base + SCREEN)
    expect(page.get_by_role("button", name=re.compile("Take the next item"))).to_be_visible()
    press_and_wait(page, "n")
    claimed = shown_item(page)
    page.screenshot(path=screenshot_dir() / "review-item.png", full_page=True)

    # j / k walk the turns and the feedback; focus follows.
    items = page.locator("[data-kb-item]")
    page.keyboard.press("j")
    expect(items.first).to_be_focused()
    expect(items.first).to_have_class(re.compile("kb-current"))
    page.keyboard.press("j")
    expect(items.nth(1)).to_be_focused()
    page.keyboard.press("k")
    expect(items.first).to_be_focused()

    page.keyboard.press("2")
    expect(page.get_by_role("radio", name=re.compile("Reject"))).to_be_checked()
    page.keyboard.press("e")
    correction = page.get_by_label(re.compile("Correction"))
    expect(correction).to_be_focused()
    # Keys typed into the correction are text, not shortcuts ("j", "2", "e", "n" all appear).
    text = f"Never ask for a password: send the reset link {uuid.uuid4().hex[:6]} (j2en)"
    page.keyboard.type(text)
    expect(correction).to_have_value(text)
    page.keyboard.press("Escape")
    expect(correction).not_to_be_focused()
    press_and_wait(page, "Enter")

    notice = page.get_by_role("status").filter(has_text="Resolved")
    expect(notice).to_be_visible()
    resolved_id = notice.locator("code").inner_text()
    assert shown_item(page) != claimed, "the next item did not come"

    # The verdict is reviewer feedback on the reviewed turn, in the session view's data.
    verdict = get_feedback(app, resolved_id)
    assert verdict.source == common_pb2.FEEDBACK_SOURCE_REVIEWER
    assert verdict.correction == text
    session = get_session(app, verdict.session_id)
    on_turn = [fb for turn in session.turns for fb in turn.feedback if fb.id == resolved_id]
    assert on_turn and on_turn[0].correction == text

    # ...and the session screen shows it as a reviewer's, on the turn.
    page.goto(f"{base}/sessions/{verdict.session_id}")
    shown = page.locator(f'[id="{verdict.interaction_id}"] [id="{resolved_id}"]')
    expect(shown.locator(".source")).to_have_text("reviewer")
    expect(shown.locator(".correction")).to_contain_text(text)
    page.screenshot(path=screenshot_dir() / "session.png", full_page=True)


def lease_held(app: Any, claim_id: str) -> bool:
    """Whether the claim's lease is still running (a release ends it; the row stays)."""
    from feedbackloop.store.routing_models import ReviewClaim

    with app.db.read() as session:
        claim = session.get(ReviewClaim, claim_id)
        assert claim is not None, f"no claim {claim_id}"
        expires = claim.lease_expires_at
    now = dt.datetime.now(dt.UTC) if expires.tzinfo else dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return bool(expires > now)


def shown_claim(page: Page) -> str:
    return page.locator("#item").get_attribute("data-claim-id") or ""


def test_skip_moves_on_and_release_gives_the_item_back(console_server: tuple[Any, str], page: Page) -> None:
    app, base = console_server
    fresh = [submit_unsafe(app, f"unsafe advice {n}")[1] for n in range(2)]
    wait_queued(app, fresh)

    sign_in(page, base, reviewer_key(app))
    page.goto(base + SCREEN)
    press_and_wait(page, "n")
    skipped, skipped_claim = shown_item(page), shown_claim(page)
    assert lease_held(app, skipped_claim)

    press_and_wait(page, "s")
    kept, kept_claim = shown_item(page), shown_claim(page)
    assert kept != skipped, "skip showed the same item again"
    assert not lease_held(app, skipped_claim), "skip kept the skipped item's claim"
    assert lease_held(app, kept_claim)

    press_and_wait(page, "r")
    expect(page).to_have_url(base + "/reviews")
    assert not lease_held(app, kept_claim), "release kept the claim"
    page.goto(base + SCREEN)
    expect(page.locator("#item")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Take the next item"))).to_be_visible()


def test_the_open_page_renews_its_lease(console_server: tuple[Any, str], page: Page) -> None:
    app, base = console_server
    _, feedback_id = submit_unsafe(app, "it suggested disabling the antivirus")
    wait_queued(app, [feedback_id])

    # The page's clock is Playwright's: fast forwarding it brings the lease's end near without
    # waiting for the queue's 15 minutes.
    page.clock.install()
    sign_in(page, base, reviewer_key(app))
    page.goto(base + SCREEN)
    press_and_wait(page, "n")
    shown_item(page)
    expires = float(page.locator("#item").get_attribute("data-lease-expires") or 0)

    with page.expect_response(lambda r: r.url.endswith(f"{SCREEN}/renew")) as renewal:
        page.clock.fast_forward("14:00")
    response = renewal.value
    assert response.status == 200
    reply = response.json()
    assert reply["held"] is True and reply["lease_expires_at"] >= expires
    expect(page.locator("#item")).to_have_attribute("data-lease-expires", str(reply["lease_expires_at"]))
    expect(page.locator("#lease")).to_contain_text("lease until")

    # The endpoint itself: the claim's own id renews, another's is not held.
    token = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
    claim_id = page.locator("#item").get_attribute("data-claim-id") or ""
    headers = {"X-CSRF-Token": token, "Origin": base}
    direct = page.request.post(base + f"{SCREEN}/renew", form={"claim_id": claim_id}, headers=headers)
    assert direct.status == 200 and direct.json()["held"] is True
    stale = page.request.post(base + f"{SCREEN}/renew", form={"claim_id": "not-mine"}, headers=headers)
    assert stale.status == 409 and stale.json()["held"] is False


def test_enter_on_a_focused_button_does_what_the_button_says(
    console_server: tuple[Any, str], page: Page
) -> None:
    """Enter submits the verdict only when no button or link has the focus: a reviewer who tabs
    to "Release" with a verdict chosen releases the item, and resolves nothing."""
    app, base = console_server
    _, feedback_id = submit_unsafe(app, "it said to share the one-time code")
    wait_queued(app, [feedback_id])

    sign_in(page, base, reviewer_key(app))
    page.goto(base + SCREEN)
    press_and_wait(page, "n")
    shown_item(page)
    claim_id = shown_claim(page)
    page.keyboard.press("1")
    expect(page.get_by_role("radio", name=re.compile("Accept"))).to_be_checked()

    page.get_by_role("button", name=re.compile("Release and leave")).focus()
    press_and_wait(page, "Enter")
    expect(page).to_have_url(base + "/reviews")
    assert not lease_held(app, claim_id), "release kept the claim"
