"""The console's guards over real HTTP (and, for script in feedback, a real Chromium): sign-in
and its cookie, CSRF, Origin and Host checks, open redirects, scopes, and other projects' data.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from console_support import (
    PROMPT,
    SAFETY_QUEUE,
    create_key,
    production_version,
    propose_patch,
    running_console,
    sign_in,
    stubs,
    submit_unsafe,
    wait_queued,
)
from playwright.sync_api import Page, expect

SCREEN = f"/reviews/{SAFETY_QUEUE}"


class Browser:
    """An HTTP client that signs in as a browser would and keeps the session's CSRF token."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, follow_redirects=False, timeout=15)
        self.csrf = ""

    def sign_in_form(self, path: str = "/sign-in") -> str:
        """GET the sign-in form; the token its hidden field carries."""
        reply = self.http.get(path)
        assert reply.status_code == 200
        match = re.search(r'name="csrf_token" value="([^"]+)"', reply.text)
        assert match, "the sign-in form has no token"
        return match.group(1)

    def sign_in(self, key: str | None, next_path: str = "/") -> httpx.Response:
        token = self.sign_in_form()
        form = {"csrf_token": token, "next": next_path}
        form.update({"keyless": "1"} if key is None else {"api_key": key})
        reply = self.http.post("/sign-in", data=form, headers={"Origin": self.base})
        if reply.status_code == 303 and reply.headers["location"] != "/sign-in":
            self.csrf = self.page_token("/reviews")
        return reply

    def page_token(self, path: str) -> str:
        reply = self.http.get(path)
        assert reply.status_code == 200, reply.text
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', reply.text)
        assert match, "a signed-in page has no CSRF token"
        return match.group(1)

    def post(self, path: str, data: dict[str, str] | None = None, **headers: str) -> httpx.Response:
        sent = {"Origin": self.base, **headers}
        return self.http.post(path, data={"csrf_token": self.csrf, **(data or {})}, headers=sent)

    def claim_shown(self) -> str:
        """The claim id the review screen shows ("" when it shows none)."""
        match = re.search(r'data-claim-id="([^"]+)"', self.http.get(SCREEN).text)
        return match.group(1) if match else ""

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def client(console_server: tuple[Any, str]) -> Iterator[Browser]:
    browser = Browser(console_server[1])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def queued(console_server: tuple[Any, str]) -> list[str]:
    """A few items waiting in the safety queue."""
    app, _ = console_server
    ids = [submit_unsafe(app, f"security item {n}")[1] for n in range(3)]
    wait_queued(app, ids)
    return ids


def reviewer(app: Any, *scopes: str) -> str:
    return create_key(app, *scopes, reviewer=f"sec-{uuid.uuid4().hex[:8]}")


def claim_status(app: Any, claim_id: str) -> tuple[str, bool]:
    """(status, lease running) of a claim, from the store."""
    from feedbackloop.store.routing_models import ReviewClaim

    with app.db.read() as session:
        claim = session.get(ReviewClaim, claim_id)
        assert claim is not None
        expires = claim.lease_expires_at
        status = claim.status
    now = dt.datetime.now(dt.UTC)
    return status, (expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)) > now


def reviewer_claims(app: Any, key_reviewer: str) -> int:
    from sqlalchemy import func, select

    from feedbackloop.store.routing_models import ReviewClaim

    with app.db.read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(ReviewClaim).where(ReviewClaim.reviewer == key_reviewer)
            )
            or 0
        )


# --- signed in or not ---


def test_without_a_session_pages_go_to_sign_in_and_posts_are_refused(client: Browser) -> None:
    page = client.http.get(SCREEN + "?x=1")
    assert page.status_code == 303
    assert page.headers["location"] == "/sign-in?next=%2Freviews%2Fsafety-review%3Fx%3D1"
    for path in (f"{SCREEN}/next", f"{SCREEN}/resolve", f"{SCREEN}/renew", "/sign-out"):
        reply = client.http.post(path, data={"csrf_token": "x"})
        assert reply.status_code == 401, path
    client.http.cookies.set("feedbackloop_console", "not-a-session")
    assert client.http.get(SCREEN).status_code == 303


def test_a_wrong_key_does_not_sign_in(client: Browser) -> None:
    reply = client.sign_in("fbl_nothere_0000000000000000")
    assert reply.status_code == 401
    assert "api_key:" in reply.text
    assert "feedbackloop_console" not in reply.headers.get("set-cookie", "")


def test_the_session_cookie_is_httponly_and_samesite_strict(
    console_server: tuple[Any, str], client: Browser
) -> None:
    reply = client.sign_in(reviewer(console_server[0], "review"))
    assert reply.status_code == 303
    cookies = [value for name, value in reply.headers.multi_items() if name == "set-cookie"]
    session = next(value for value in cookies if value.startswith("feedbackloop_console="))
    attributes = {part.strip().lower() for part in session.split(";")[1:]}
    assert "secure" not in attributes  # plain http on loopback; FEEDBACKLOOP_CONSOLE_SECURE_COOKIES sets it
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/" in attributes
    # The value is a random session id, never the key.
    assert "fbl_" not in session
    # The sign-in form's double-submit cookie is HttpOnly and Strict as well.
    form = client.http.get("/sign-in")
    sign_in_cookie = form.headers["set-cookie"].lower()
    assert "httponly" in sign_in_cookie and "samesite=strict" in sign_in_cookie


def test_behind_https_the_cookies_are_secure(tmp_path: Any, embedder: Any) -> None:
    with (
        running_console(tmp_path, embedder, console_secure_cookies=True) as (_, base),
        httpx.Client(base_url=base, follow_redirects=False) as http,
    ):
        form = http.get("/sign-in")
        assert "secure" in {part.strip().lower() for part in form.headers["set-cookie"].split(";")}
        # A client keeps a Secure cookie for https only: this plain-http test hands it back itself.
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token
        # Behind the TLS proxy the browser's page is https://: the same host over plain http is
        # another origin, which anyone on the network path could write.
        for origin in (base, base.replace("http://", "https://", 1)):
            reply = http.post(
                "/sign-in",
                data={"csrf_token": token.group(1), "keyless": "1"},
                headers={"Origin": origin, "Cookie": f"feedbackloop_sign_in={token.group(1)}"},
            )
            if origin.startswith("http://"):
                assert reply.status_code == 403 and "came from another site" in reply.text
        assert reply.status_code == 303
        session = next(v for n, v in reply.headers.multi_items() if n == "set-cookie" and "console=" in v)
        assert "secure" in {part.strip().lower() for part in session.split(";")[1:]}


def test_sign_in_needs_its_form_token(client: Browser) -> None:
    client.sign_in_form()
    reply = client.http.post("/sign-in", data={"keyless": "1", "csrf_token": "guessed"})
    assert reply.status_code == 403
    assert "feedbackloop_console" not in reply.headers.get("set-cookie", "")


def test_signing_out_ends_the_session_on_the_server(console_server: tuple[Any, str], client: Browser) -> None:
    assert client.sign_in(reviewer(console_server[0], "review", "read")).status_code == 303
    stolen = client.http.cookies["feedbackloop_console"]
    assert client.post("/sign-out").status_code == 303
    replay = httpx.Client(base_url=client.base, follow_redirects=False)
    try:
        replay.cookies.set("feedbackloop_console", stolen)
        assert replay.get(SCREEN).status_code == 303  # to sign in: the old id is gone
    finally:
        replay.close()


def test_markup_in_the_url_is_shown_as_text(console_server: tuple[Any, str], client: Browser) -> None:
    assert client.sign_in(reviewer(console_server[0], "review", "read")).status_code == 303
    hostile = '<img src=x onerror="alert(1)">'
    for path in (f"/reviews/{hostile}", f"/sessions/{hostile}", f"/nowhere/{hostile}"):
        reply = client.http.get(path, follow_redirects=True)
        assert "<img src=x" not in reply.text, path
    shown = client.http.get(f"/reviews/{hostile}")
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in shown.text


# --- CSRF and Origin ---


def test_a_missing_or_wrong_csrf_token_is_refused_and_changes_nothing(
    console_server: tuple[Any, str], client: Browser, queued: list[str]
) -> None:
    app, _ = console_server
    name = f"csrf-{uuid.uuid4().hex[:8]}"
    assert client.sign_in(create_key(app, "review", "read", reviewer=name)).status_code == 303

    for token in (None, "", "wrong", client.csrf + "x"):
        data = {} if token is None else {"csrf_token": token}
        reply = client.http.post(f"{SCREEN}/next", data=data, headers={"Origin": client.base})
        assert reply.status_code == 403, token
        assert "security token" in reply.text
    header = client.http.post(f"{SCREEN}/next", headers={"Origin": client.base, "X-CSRF-Token": "wrong"})
    assert header.status_code == 403
    assert reviewer_claims(app, name) == 0

    # With the token the same request claims; a resolve with a bad token leaves the claim open.
    assert client.post(f"{SCREEN}/next").status_code == 303
    claim_id = client.claim_shown()
    assert claim_id
    bad = client.http.post(
        f"{SCREEN}/resolve",
        data={"csrf_token": "wrong", "claim_id": claim_id, "verdict": "accept"},
        headers={"Origin": client.base},
    )
    assert bad.status_code == 403
    assert claim_status(app, claim_id) == ("claimed", True)
    # The token of another session does not work either.
    other = Browser(client.base)
    try:
        assert other.sign_in(reviewer(app, "review")).status_code == 303
        stolen = other.post(f"{SCREEN}/release", {"claim_id": claim_id, "csrf_token": client.csrf})
        assert stolen.status_code == 403
    finally:
        other.close()
    assert claim_status(app, claim_id) == ("claimed", True)
    assert client.post(f"{SCREEN}/release", {"claim_id": claim_id}).status_code == 303


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
def test_a_cross_origin_post_is_refused(
    console_server: tuple[Any, str], client: Browser, origin: str
) -> None:
    app, _ = console_server
    name = f"origin-{uuid.uuid4().hex[:8]}"
    assert client.sign_in(create_key(app, "review", reviewer=name)).status_code == 303
    reply = client.post(f"{SCREEN}/next", Origin=origin)
    assert reply.status_code == 403
    assert "another site" in reply.text
    assert reviewer_claims(app, name) == 0
    # Sign-in itself is guarded the same way (login CSRF).
    token = client.sign_in_form()
    forged = client.http.post(
        "/sign-in", data={"csrf_token": token, "keyless": "1"}, headers={"Origin": origin}
    )
    assert forged.status_code == 403


# --- Host ---


@pytest.mark.parametrize("host", ["evil.example", "evil.example:50080", "127.0.0.1.evil.example", "[::2]:80"])
def test_a_foreign_host_header_is_not_answered_on_loopback(client: Browser, host: str) -> None:
    reply = client.http.get("/sign-in", headers={"Host": host})
    assert reply.status_code == 421
    assert "csrf_token" not in reply.text


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_loopback_host_names_are_answered(client: Browser, host: str) -> None:
    port = client.base.rsplit(":", 1)[1]
    assert client.http.get("/healthz", headers={"Host": f"{host}:{port}"}).status_code == 200


# --- caching ---


def test_pages_are_never_kept_and_versioned_static_files_are_kept(
    console_server: tuple[Any, str], client: Browser
) -> None:
    assert client.sign_in(reviewer(console_server[0], "review", "read")).status_code == 303
    page = client.http.get(SCREEN)
    assert page.headers["cache-control"] == "no-store"
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert len(assets) >= 3 and all(re.search(r"\?v=[0-9a-f]{12}$", url) for url in assets), assets
    for url in assets:
        reply = client.http.get(url)
        assert reply.status_code == 200, url
        assert reply.headers["cache-control"] == "public, max-age=31536000, immutable", url
    # The version is the content's: without it (or with another form) a file is revalidated.
    bare = assets[0].split("?")[0]
    for url in (bare, bare + "?v=1", bare + "?v=../../x"):
        assert client.http.get(url).headers["cache-control"] == "no-cache", url


# --- redirects after sign-in ---


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        " //evil.example",
        "javascript:alert(1)",
    ],
)
def test_next_never_leaves_the_console(console_server: tuple[Any, str], client: Browser, target: str) -> None:
    reply = client.sign_in(reviewer(console_server[0], "review"), next_path=target)
    assert reply.status_code == 303
    location = reply.headers["location"]
    assert location == "/"
    # The form carries only safe values forward too.
    form = client.http.get("/sign-in", params={"next": target})
    value = re.search(r'name="next" value="([^"]*)"', form.text)
    assert value and value.group(1) == "/"


@pytest.mark.parametrize("target", ["/reviews/safety-review?x=1", "/sessions/s%2F1", "/%0A/evil.example"])
def test_next_keeps_a_console_path(console_server: tuple[Any, str], client: Browser, target: str) -> None:
    # An escaped character stays escaped: the browser reads the path, on this origin.
    reply = client.sign_in(reviewer(console_server[0], "review"), next_path=target)
    assert reply.headers["location"] == target


# --- scopes ---


def test_a_read_only_key_cannot_claim(
    console_server: tuple[Any, str], client: Browser, queued: list[str]
) -> None:
    app, _ = console_server
    name = f"ro-{uuid.uuid4().hex[:8]}"
    assert client.sign_in(create_key(app, "read", reviewer=name)).status_code == 303
    reply = client.post(f"{SCREEN}/next")
    assert reply.status_code == 403
    assert reviewer_claims(app, name) == 0


def test_a_review_key_without_read_still_works_its_queue(
    console_server: tuple[Any, str], client: Browser, queued: list[str]
) -> None:
    app, _ = console_server
    assert client.sign_in(reviewer(app, "review")).status_code == 303
    listing = client.http.get("/reviews")
    assert listing.status_code == 200 and 'name="queue"' in listing.text
    opened = client.http.get("/reviews", params={"queue": SAFETY_QUEUE})
    assert opened.status_code == 303 and opened.headers["location"] == SCREEN
    assert client.post(f"{SCREEN}/next").status_code == 303
    assert client.claim_shown()


def test_a_review_key_cannot_approve_or_reject_a_patch(
    console_server: tuple[Any, str], client: Browser
) -> None:
    from feedbackloop.v1 import prompts_pb2, prompts_pb2_grpc

    app, _ = console_server
    patch = propose_patch(app, model_version=f"sec-{uuid.uuid4().hex[:6]}")
    before = production_version(app)
    assert client.sign_in(create_key(app, "review", "read", "ingest")).status_code == 303
    listing = client.http.get("/patches")
    assert patch.id in listing.text
    assert f"Approve {patch.id}" not in listing.text  # the console hides what the key may not do
    for action in ("approve", "reject"):
        # ...and the server refuses it anyway.
        reply = client.post(f"/patches/{patch.id}/{action}", {"reason": "no"})
        assert reply.status_code == 403, action
        assert "admin" in reply.text
    assert production_version(app) == before
    api = stubs(app)
    try:
        still = prompts_pb2_grpc.PromptServiceStub(api.channel).ListPatches(
            prompts_pb2.ListPatchesRequest(prompt=PROMPT, status=prompts_pb2.PATCH_STATUS_PROPOSED)
        )
    finally:
        api.channel.close()
    assert patch.id in {p.id for p in still.patches}


def test_a_refused_verdict_keeps_the_item_and_says_why(
    console_server: tuple[Any, str], client: Browser, queued: list[str]
) -> None:
    app, _ = console_server
    assert client.sign_in(reviewer(app, "review", "read")).status_code == 303
    assert client.post(f"{SCREEN}/next").status_code == 303
    claim_id = client.claim_shown()
    for form, field in (
        ({"verdict": "maybe"}, "verdict"),
        ({"verdict": "reject", "categories": "no-such-category"}, "categories"),
    ):
        reply = client.post(f"{SCREEN}/resolve", {"claim_id": claim_id, **form})
        assert reply.status_code == 400, reply.text
        assert field in reply.text
        assert claim_status(app, claim_id) == ("claimed", True)
        assert client.claim_shown() == claim_id


# --- other projects ---


def test_another_projects_ids_show_nothing(console_server: tuple[Any, str], client: Browser) -> None:
    from feedbackloop.v1 import common_pb2, ingestion_pb2

    app, _ = console_server
    other = create_key(app, "ingest", "read", "review", project="other-project")
    secret = f"other-project-secret-{uuid.uuid4().hex[:6]}"
    session_id = f"other-{uuid.uuid4().hex[:8]}"
    api = stubs(app)
    metadata = (("authorization", f"Bearer {other}"),)
    try:
        interaction = api.ingestion.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(session_id=session_id, turn_index=0, response=secret)
            ),
            metadata=metadata,
        )
        feedback_id = api.ingestion.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(
                feedback=common_pb2.Feedback(
                    session_id=session_id,
                    interaction_id=interaction.interaction_id,
                    thumb=common_pb2.THUMB_DOWN,
                    comment=secret,
                )
            ),
            metadata=metadata,
        ).feedback_id
    finally:
        api.channel.close()

    assert client.sign_in(create_key(app, "admin")).status_code == 303
    for path in (f"/sessions/{session_id}", f"/sessions?session_id={session_id}", f"/feedback/{feedback_id}"):
        reply = client.http.get(path, follow_redirects=True)
        assert reply.status_code in (403, 404), path
        assert secret not in reply.text
    # The same pages do show it to that project's own key: the refusal above is the project's.
    owner = Browser(client.base)
    try:
        assert owner.sign_in(other).status_code == 303
        for path in (f"/sessions/{session_id}", f"/feedback/{feedback_id}"):
            reply = owner.http.get(path, follow_redirects=True)
            assert reply.status_code == 200 and secret in reply.text, path
    finally:
        owner.close()
    # A claim id of another session is not acted on.
    for action in ("resolve", "skip", "release"):
        reply = client.post(f"{SCREEN}/{action}", {"claim_id": "rc_someone_elses", "verdict": "accept"})
        assert reply.status_code == 303 and reply.headers["location"] in (SCREEN, "/reviews")


# --- script in feedback ---

HOSTILE = (
    '<script>window.__owned = "script"</script>'
    '<img src="x" onerror="window.__owned = \'img\'">'
    '"><svg onload="window.__owned = \'svg\'">'
)


def test_html_in_feedback_is_shown_as_text_and_never_runs(
    console_server: tuple[Any, str], page: Page
) -> None:
    app, base = console_server
    _, feedback_id = submit_unsafe(app, HOSTILE, response=HOSTILE)
    wait_queued(app, [feedback_id])

    sign_in(page, base, reviewer(app, "review", "read"))
    page.goto(base + SCREEN)
    with page.expect_navigation():
        page.keyboard.press("n")
    # Skip past other tests' items until the hostile one is shown.
    for _ in range(20):
        if page.locator(".comment", has_text="<script>").count():
            break
        with page.expect_navigation():
            page.keyboard.press("s")
    comment = page.locator(".comment", has_text="<script>").first
    expect(comment).to_have_text(HOSTILE)
    assert page.evaluate("() => window.__owned") is None
    assert page.locator("main script, main img, main svg").count() == 0

    response = page.request.get(page.url)
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
