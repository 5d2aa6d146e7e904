"""The review screen's renew endpoint answers its script in JSON, whatever happens: renewed
(200), the item lost (409: lapsed and taken by others, not this session's), refused by the server
(403: PERMISSION_DENIED, such as another reviewer's claim) or before it (401 signed out, 403
another origin or a bad CSRF token, 503 the server down); and the open page tells the reviewer
when the item was lost.

Against a real server with the real model and the default policies (items come from `unsafe`
thumbs down, queued for safety review with two reviews each). The endpoint's tests drive a
console of their own in process (Starlette's test client), so a test can reach its sessions; the
page's test drives the real console on loopback in Chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import grpc
import pytest
from console_support import (
    SAFETY_QUEUE,
    reviewer_key,
    running_console,
    sign_in,
    submit_unsafe,
    wait_queued,
)
from playwright.sync_api import Page, expect
from sqlalchemy import select
from starlette.testclient import TestClient

from feedbackloop.console.app import ConsoleConfig, build_app
from feedbackloop.console.sessions import COOKIE_NAME, Claim, ConsoleSession
from feedbackloop.store.routing_models import ReviewClaim, ReviewItemRow
from feedbackloop.v1 import reviews_pb2, reviews_pb2_grpc

SCREEN = f"/reviews/{SAFETY_QUEUE}"
RENEW = f"{SCREEN}/renew"
ORIGIN = "http://testserver"
_HIDDEN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META_TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
_CLAIM = re.compile(r'data-claim-id="([^"]+)"')
_ITEM = re.compile(r'data-item-id="([^"]+)"')


class Reviewer:
    """One signed-in console session (test client), holding at most the one claim it took."""

    def __init__(self, client: TestClient, key: str | None) -> None:
        self.client = client
        form = client.get("/sign-in")
        token = _HIDDEN_TOKEN.search(form.text)
        assert token, form.text
        data = {"csrf_token": token.group(1), "next": SCREEN}
        data.update({"keyless": "1"} if key is None else {"api_key": key})
        signed_in = client.post("/sign-in", data=data, headers={"origin": ORIGIN}, follow_redirects=False)
        assert signed_in.status_code == 303, signed_in.text
        meta = _META_TOKEN.search(client.get(SCREEN).text)
        assert meta
        self.csrf = meta.group(1)
        self.claim_id = self.item_id = ""

    @property
    def session(self) -> ConsoleSession:
        store = self.client.app.state.console.sessions  # type: ignore[attr-defined]
        session: ConsoleSession | None = store.get(self.client.cookies.get(COOKIE_NAME))
        assert session is not None
        return session

    def take_next(self) -> None:
        taken = self.client.post(
            f"{SCREEN}/next",
            data={"csrf_token": self.csrf},
            headers={"origin": ORIGIN},
            follow_redirects=False,
        )
        assert taken.status_code == 303, taken.text
        screen = self.client.get(SCREEN).text
        claim, item = _CLAIM.search(screen), _ITEM.search(screen)
        assert claim and item, "no item was given"
        self.claim_id, self.item_id = claim.group(1), item.group(1)

    def renew(self, claim_id: str | None = None, **headers: str) -> Any:
        headers = {"x-csrf-token": self.csrf, "origin": ORIGIN, **headers}
        return self.client.post(
            RENEW, data={"claim_id": self.claim_id if claim_id is None else claim_id}, headers=headers
        )


@contextmanager
def console_of(app: Any) -> Iterator[TestClient]:
    """A console of its own, in process, on the server's gRPC port."""
    config = ConsoleConfig(target=f"127.0.0.1:{app.port}", loopback_only=False)
    with TestClient(build_app(config), base_url=ORIGIN) as client:
        yield client


@pytest.fixture
def client(console_server: tuple[Any, str]) -> Iterator[TestClient]:
    with console_of(console_server[0]) as test_client:
        yield test_client


def queued_item(app: Any, comment: str) -> None:
    _, feedback_id = submit_unsafe(app, comment)
    wait_queued(app, [feedback_id])


def reviewer_holding_a_new_item(app: Any, client: TestClient, key: str | None, comment: str) -> Reviewer:
    """A reviewer signed in with `key` (keyless when None) who took the next item, after an item
    for `comment` was queued."""
    queued_item(app, comment)
    reviewer = Reviewer(client, key)
    reviewer.take_next()
    return reviewer


def lapse(app: Any, claim_id: str) -> None:
    """Let the claim's lease run out, as an hour without renewing would."""
    with app.db.write() as session:
        claim = session.get(ReviewClaim, claim_id)
        assert claim is not None
        claim.lease_expires_at = claim.lease_expires_at - timedelta(hours=1)


def claim_as_another(app: Any, item_id: str) -> str:
    """Another reviewer claims `item_id` (every other open item skipped); the claim id."""
    with app.db.read() as session:
        others = list(
            session.scalars(
                select(ReviewItemRow.id).where(
                    ReviewItemRow.queue == SAFETY_QUEUE,
                    ReviewItemRow.status == "open",
                    ReviewItemRow.id != item_id,
                )
            )
        )
    key = reviewer_key(app)
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        reply = reviews_pb2_grpc.ReviewServiceStub(channel).ClaimReviewItem(
            reviews_pb2.ClaimReviewItemRequest(queue=SAFETY_QUEUE, skip_item_ids=others),
            metadata=(("authorization", f"Bearer {key}"),),
        )
    assert reply.item.id == item_id, "another reviewer was given another item"
    return str(reply.claim_id)


def lease_of(app: Any, claim_id: str) -> Any:
    with app.db.read() as session:
        claim = session.get(ReviewClaim, claim_id)
        assert claim is not None
        return claim.lease_expires_at


def is_json(response: Any) -> bool:
    return bool(response.headers["content-type"].startswith("application/json"))


def test_a_lapsed_claim_others_took_is_lost_and_forgotten(
    console_server: tuple[Any, str], client: TestClient
) -> None:
    app, _ = console_server
    reviewer = reviewer_holding_a_new_item(
        app, client, reviewer_key(app), "it told me to turn off two-factor sign-in"
    )

    renewed = reviewer.renew()
    assert renewed.status_code == 200 and is_json(renewed)
    assert renewed.json()["held"] is True

    # The lease runs out and the item's two reviews go to two other reviewers.
    lapse(app, reviewer.claim_id)
    claim_as_another(app, reviewer.item_id)
    claim_as_another(app, reviewer.item_id)
    lost = reviewer.renew()
    assert lost.status_code == 409 and is_json(lost)
    body = lost.json()
    assert body["held"] is False
    assert body["error"].startswith(f"claim_id: the lease on item {reviewer.item_id} expired at ")
    assert body["error"].endswith("and another reviewer has claimed it")
    # The session forgets the claim: the screen offers the next item instead of the lost one.
    assert SAFETY_QUEUE not in reviewer.session.claims
    assert "Take the next item" in client.get(SCREEN).text


def test_the_servers_permission_denied_is_a_refusal_not_a_lost_item(
    console_server: tuple[Any, str], client: TestClient
) -> None:
    app, _ = console_server
    reviewer = reviewer_holding_a_new_item(app, client, reviewer_key(app), "it read out my saved card number")
    theirs = claim_as_another(app, reviewer.item_id)
    their_lease = lease_of(app, theirs)
    # The session holds, in place of its own, another reviewer's claim (the console never hands
    # one out; the server is the guard). The server's PERMISSION_DENIED for it is the one it gives
    # a key lacking `review` or meant for another project: the key is refused, not the item lost.
    held = reviewer.session.claims[SAFETY_QUEUE]
    planted = Claim(theirs, held.item_id, held.item, held.lease_expires_at)
    reviewer.session.claims[SAFETY_QUEUE] = planted

    refused = reviewer.renew(theirs)
    assert refused.status_code == 403 and is_json(refused)
    assert refused.json() == {"error": "claim_id: this claim belongs to another reviewer"}
    assert lease_of(app, theirs) == their_lease
    assert reviewer.session.claims[SAFETY_QUEUE] is planted  # not forgotten as a lost item


def test_a_claim_this_session_does_not_hold_is_not_held(
    console_server: tuple[Any, str], client: TestClient
) -> None:
    reviewer = Reviewer(client, reviewer_key(console_server[0]))
    stale = reviewer.renew("rc_not-mine")
    assert stale.status_code == 409 and is_json(stale)
    assert stale.json() == {
        "held": False,
        "error": f"claim_id: rc_not-mine is not the claim this session holds in queue {SAFETY_QUEUE}",
    }


def test_refusals_before_the_handler_are_json_too(
    console_server: tuple[Any, str], client: TestClient
) -> None:
    reviewer = Reviewer(client, reviewer_key(console_server[0]))
    bad_token = reviewer.renew(**{"x-csrf-token": "wrong"})
    assert bad_token.status_code == 403 and is_json(bad_token)
    assert bad_token.json() == {
        "error": "The form's security token is missing or wrong. Reload the page and try again."
    }
    elsewhere = reviewer.renew(origin="https://elsewhere.example")
    assert elsewhere.status_code == 403 and is_json(elsewhere)
    assert elsewhere.json() == {"error": "This request came from another site and was refused."}
    client.cookies.clear()
    signed_out = reviewer.renew()
    assert signed_out.status_code == 401 and is_json(signed_out)
    assert signed_out.json() == {"error": "You are not signed in (or your session expired). Sign in again."}


def test_the_server_down_is_503_and_the_claim_is_kept(tmp_path: Any, embedder: Any) -> None:
    with running_console(tmp_path, embedder) as (app, _), console_of(app) as client:
        reviewer = reviewer_holding_a_new_item(app, client, None, "it told me to share my recovery codes")
        app.stop(grace=1.0)
        down = reviewer.renew()
        assert down.status_code == 503 and is_json(down)
        assert set(down.json()) == {"error"} and down.json()["error"]
        # Not known to be lost: the session keeps the claim for the next try.
        assert reviewer.session.claims[SAFETY_QUEUE].claim_id == reviewer.claim_id


def test_the_page_tells_the_reviewer_the_item_was_lost(console_server: tuple[Any, str], page: Page) -> None:
    app, base = console_server
    queued_item(app, "it suggested reusing my old password")
    page.clock.install()
    sign_in(page, base, reviewer_key(app))
    page.goto(base + SCREEN)
    with page.expect_navigation():
        page.keyboard.press("n")
    item_id = page.locator("#item").get_attribute("data-item-id") or ""
    claim_id = page.locator("#item").get_attribute("data-claim-id") or ""
    notice = page.locator("#lease-notice")
    expect(notice).to_be_hidden()

    # The server down for a moment (the console answers 503): the page says so, keeps the item.
    def down(route: Any) -> None:
        route.fulfill(status=503, json={"error": "the feedbackloop server did not answer"})

    page.route(f"**{RENEW}", down)
    with page.expect_response(lambda r: r.url.endswith(RENEW)):
        page.clock.fast_forward("14:00")
    expect(notice).to_have_text(
        "The lease could not be renewed (the feedbackloop server did not answer); trying again."
    )
    page.unroute(f"**{RENEW}")

    lapse(app, claim_id)
    claim_as_another(app, item_id)
    claim_as_another(app, item_id)
    with page.expect_response(lambda r: r.url.endswith(RENEW)) as renewal:
        page.clock.fast_forward("00:15")
    assert renewal.value.status == 409
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("This item is no longer yours (claim_id: the lease on item")
    expect(notice).to_contain_text("reload the page to take the next item")
    expect(page.locator("#lease")).to_have_text("lease lost")
    # Lost is final: the page stops renewing.
    renewals: list[str] = []
    page.on("request", lambda r: renewals.append(r.url) if r.url.endswith(RENEW) else None)
    page.clock.fast_forward("01:00")
    page.wait_for_timeout(200)
    assert renewals == []
    page.reload()
    expect(page.get_by_role("button", name=re.compile("Take the next item"))).to_be_visible()
