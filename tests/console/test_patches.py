"""Prompt patches: the list with evidence and template diff, approve and reject (admin only), over
real HTTP against a real server."""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
from console_support import create_key
from screens_support import (
    PATCHER,
    PATCHER_ROLE,
    Api,
    Browser,
    apply_policies,
    default_policy_files,
    text_of,
)

from feedbackloop.v1 import common_pb2, prompts_pb2, prompts_pb2_grpc, routing_pb2


@pytest.fixture(scope="module")
def proposed(console_server: tuple[Any, str]) -> dict[str, Any]:
    """Three proposed patches of support-answer, each from one feedback of its own session."""
    app, _ = console_server
    apply_policies(
        app, [*default_policy_files(), routing_pb2.PolicyFile(path="patcher.yaml", content=PATCHER)]
    )
    api = Api(app)
    sessions = {}
    for word in ("refunds", "discounts", "coupons"):
        interaction = api.turn(f"patch-{word}", f"Can I get {word}?", f"Yes, {word} are unlimited.")
        api.feedback(
            interaction,
            thumb=common_pb2.THUMB_DOWN,
            comment=f"{word} are not unlimited <em>at all</em>",
            user=common_pb2.User(id="u1", role=PATCHER_ROLE),
        )
        sessions[word] = f"patch-{word}"
    api.wait_routed()
    api.close()
    return sessions


def _patch_ids(page: str) -> list[str]:
    return re.findall(r'<article class="card patch" id="(pp_[^"]+)"', page)


def _prompts(app: Any) -> Any:
    return prompts_pb2_grpc.PromptServiceStub(grpc.insecure_channel(f"127.0.0.1:{app.port}"))


def test_proposed_patches_show_their_diff_and_evidence_linked_to_sessions(
    proposed: dict[str, Any], browser: Browser
) -> None:
    reply = browser.get("/patches")
    assert reply.status_code == 200, reply.text
    assert len(_patch_ids(reply.text)) == 3
    text = text_of(reply.text)
    assert "proposed by policy console-patcher" in text
    # The diff: the guideline added after the production template, as an added line.
    assert re.search(
        r'<span class="add"><span class="visually-hidden">added: </span>\+Never say: coupons', reply.text
    )
    assert "against production (version 1)" in text
    for session in proposed.values():
        assert f'href="/sessions/{session}#' in reply.text
    assert "<em>at all</em>" not in reply.text and "&lt;em&gt;at all&lt;/em&gt;" in reply.text
    assert reply.text.count('data-action="approve"') == 3  # the anonymous loopback principal is admin


def test_approving_a_patch_makes_it_production_and_rejecting_keeps_the_reason(
    console_server: tuple[Any, str], proposed: dict[str, Any], browser: Browser
) -> None:
    app, _ = console_server
    first, second = _patch_ids(browser.get("/patches").text)[:2]
    approved = browser.post(f"/patches/{first}/approve")
    assert approved.status_code == 303
    after = browser.client.get(approved.headers["location"])
    assert f"Approved {first}: it is now production version 2." in text_of(after.text)
    prompt = _prompts(app).GetPrompt(prompts_pb2.GetPromptRequest(name="support-answer")).prompt
    assert prompt.version == 2 and prompt.patch_id == first
    rejected = browser.post(f"/patches/{second}/reject", {"reason": "too narrow"})
    assert rejected.status_code == 303
    listing = browser.client.get(rejected.headers["location"]).text
    assert f"Rejected {second}." in text_of(listing) and "note: too narrow" in text_of(listing)
    again = browser.post(f"/patches/{second}/approve")
    assert again.status_code == 409  # the server's refusal, shown as it is
    assert "proposed" in text_of(again.text)
    applied = browser.get("/patches", status="applied").text
    assert "version 2 against version 1" in text_of(applied)


def test_a_key_without_admin_sees_patches_but_no_buttons_and_is_refused(
    console_server: tuple[Any, str], proposed: dict[str, Any]
) -> None:
    app, base_url = console_server
    reviewer = Browser(base_url).sign_in(create_key(app, "read", "ingest"))
    page = reviewer.get("/patches", status="all")
    assert page.status_code == 200 and _patch_ids(page.text)
    assert 'data-action="approve"' not in page.text and "need a key with the admin scope" in text_of(
        page.text
    )
    pending = _patch_ids(reviewer.get("/patches").text)
    assert pending
    refused = reviewer.post(f"/patches/{pending[0]}/approve")
    assert refused.status_code == 403
    assert "this API key lacks the 'admin' scope" in text_of(refused.text)
    assert pending[0] in _patch_ids(reviewer.get("/patches").text)  # still proposed
    reviewer.close()
