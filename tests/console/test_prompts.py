"""A prompt's version history with its labels and diffs, and rollback of production (admin), over
real HTTP against a real server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from console_support import create_key
from screens_support import PATCHER, PATCHER_ROLE, Api, Browser, apply_policies, default_policy_files, text_of

from feedbackloop.v1 import common_pb2, prompts_pb2, prompts_pb2_grpc, routing_pb2


@pytest.fixture(scope="module")
def stub(console_server: tuple[Any, str]) -> Iterator[Any]:
    app, _ = console_server
    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
    yield prompts_pb2_grpc.PromptServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def patched(console_server: tuple[Any, str], stub: Any) -> None:
    """support-answer at version 2: one guideline patch approved over the policy's version 1."""
    app, _ = console_server
    apply_policies(
        app, [*default_policy_files(), routing_pb2.PolicyFile(path="patcher.yaml", content=PATCHER)]
    )
    api = Api(app)
    interaction = api.turn("prompt-refunds", "Can I get a refund?", "Refunds are unlimited.")
    api.feedback(interaction, comment="refunds are not unlimited", user=common_pb2.User(role=PATCHER_ROLE))
    api.wait_routed()
    api.close()
    patch = stub.ListPatches(
        prompts_pb2.ListPatchesRequest(status=prompts_pb2.PATCH_STATUS_PROPOSED)
    ).patches[0]
    stub.ApprovePatch(prompts_pb2.ApprovePatchRequest(patch_id=patch.id))


def _production(stub: Any) -> int:
    return int(stub.GetPrompt(prompts_pb2.GetPromptRequest(name="support-answer")).prompt.version)


def test_the_history_lists_every_version_newest_first_with_labels_and_diffs(
    patched: None, stub: Any, browser: Browser
) -> None:
    page = browser.get("/prompts/support-answer")
    assert page.status_code == 200, page.text
    assert re.findall(r'<tr id="version-(\d+)">', page.text) == ["2", "1"]
    assert 'data-production="2"' in page.text
    assert "production version 2 · latest version 2" in text_of(page.text)
    assert re.search(r'<tr id="version-2">.*?badge production.*?badge latest', page.text, re.S)
    assert re.search(r'<span class="add">.*\+Never say: refunds are not unlimited', page.text)
    assert "Make version 1 production" in page.text and "Make version 2 production" not in page.text
    listing = browser.get("/prompts")
    assert 'href="/prompts/support-answer"' in listing.text
    assert browser.get("/prompts", name="support-answer").headers["location"] == "/prompts/support-answer"
    assert browser.get("/prompts/no-such-prompt").status_code == 404


def test_rollback_moves_production_and_needs_admin(
    console_server: tuple[Any, str], patched: None, stub: Any, browser: Browser
) -> None:
    app, base_url = console_server
    reader = Browser(base_url).sign_in(create_key(app, "read"))
    page = reader.get("/prompts/support-answer")
    assert "Make version 1 production" not in page.text
    assert "Rolling back needs a key with the admin scope" in text_of(page.text)
    refused = reader.post("/prompts/support-answer/rollback", {"version": "1"})
    assert refused.status_code == 403 and "this API key lacks the 'admin' scope" in text_of(refused.text)
    reader.close()
    assert _production(stub) == 2
    rolled = browser.post("/prompts/support-answer/rollback", {"version": "1"})
    assert rolled.status_code == 303
    after = browser.client.get(rolled.headers["location"])
    assert "Production is now version 1. Patches rolled back: pp_" in text_of(after.text)
    assert _production(stub) == 1
    assert "Make version 2 production" in after.text
    bad = browser.post("/prompts/support-answer/rollback", {"version": "x"})
    assert bad.status_code == 400 and "version: a version number from 1" in text_of(bad.text)
