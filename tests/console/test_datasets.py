"""Datasets: items with their source feedback linked to sessions, and the JSONL export download,
over real HTTP against a real server (the default policies collect end users' corrections)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from console_support import create_key
from screens_support import Api, Browser, text_of

from feedbackloop.v1 import common_pb2

CORRECTIONS = {
    "ds-pro": ("How much is the Pro plan?", "It is $10.", "The Pro plan costs $12 a month since March."),
    "ds-team": ("Is there a Team plan?", "No.", "Yes: the Team plan is $30 a seat <b>per month</b>."),
}


@pytest.fixture(scope="module")
def collected(console_server: tuple[Any, str]) -> dict[str, str]:
    app, _ = console_server
    api = Api(app)
    feedback = {}
    for session, (question, answer, correction) in CORRECTIONS.items():
        interaction = api.turn(session, question, answer)
        feedback[session] = api.feedback(interaction, thumb=common_pb2.THUMB_DOWN, correction=correction)
    api.wait_routed()
    api.close()
    return feedback


def test_the_datasets_of_the_live_policies_are_listed(browser: Browser) -> None:
    reply = browser.get("/datasets")
    assert reply.status_code == 200
    assert '<a href="/datasets/support-corrections" data-kb-item>support-corrections</a>' in reply.text
    assert (
        browser.get("/datasets", name="support-corrections").headers["location"]
        == "/datasets/support-corrections"
    )


def test_items_show_their_source_feedback_linked_to_sessions(
    collected: dict[str, str], browser: Browser
) -> None:
    reply = browser.get("/datasets/support-corrections")
    assert reply.status_code == 200, reply.text
    items = re.findall(r'<article class="card item" id="(di_[^"]+)"', reply.text)
    assert len(items) == 2
    text = text_of(reply.text)
    assert "ideal output: The Pro plan costs $12 a month since March." in text
    assert "added by policy corrections-to-dataset" in text
    for session, fid in collected.items():
        assert fid in reply.text
        assert f'href="/sessions/{session}#' in reply.text
    assert "<b>per month</b>" not in reply.text and "&lt;b&gt;per month&lt;/b&gt;" in reply.text


def test_the_export_is_a_jsonl_download_in_either_format(collected: dict[str, str], browser: Browser) -> None:
    chat = browser.get("/datasets/support-corrections/export")
    assert chat.status_code == 200
    assert (
        chat.headers["content-disposition"] == 'attachment; filename="support-corrections-openai_chat.jsonl"'
    )
    lines = [json.loads(line) for line in chat.text.splitlines()]
    assert len(lines) == 2
    assert {line["messages"][-1]["content"] for line in lines} == {c for _, _, c in CORRECTIONS.values()}
    plain = browser.get("/datasets/support-corrections/export", format="plain")
    assert plain.status_code == 200
    assert {json.loads(line)["ideal_output"] for line in plain.text.splitlines()} == {
        c for _, _, c in CORRECTIONS.values()
    }
    bad = browser.get("/datasets/support-corrections/export", format="csv")
    assert bad.status_code == 400 and "format: choose one of openai_chat, plain" in text_of(bad.text)


def test_another_project_sees_none_of_the_items(
    console_server: tuple[Any, str], collected: dict[str, str]
) -> None:
    app, base_url = console_server
    other = Browser(base_url).sign_in(create_key(app, "read", project="other-project"))
    page = other.get("/datasets/support-corrections")
    assert page.status_code in (200, 404)
    assert not re.findall(r'id="(di_[^"]+)"', page.text)
    export = other.get("/datasets/support-corrections/export")
    assert not any(c in export.text for _, _, c in CORRECTIONS.values())
    other.close()
    writer = Browser(base_url).sign_in(create_key(app, "ingest"))
    refused = writer.get("/datasets/support-corrections/export")
    assert refused.status_code == 403 and "this API key lacks the 'read' scope" in text_of(refused.text)
    writer.close()
