"""The session screen: every turn with its messages, model, prompt, trace and span ids, and all of
its feedback from every source, over real HTTP against a real server."""

from __future__ import annotations

import re
from typing import Any

from console_support import create_key
from screens_support import Api, Browser, text_of

from feedbackloop.v1 import common_pb2, ingestion_pb2


def test_a_session_shows_every_turn_and_all_its_feedback(
    console_server: tuple[Any, str], browser: Browser
) -> None:
    app, _ = console_server
    api = Api(app)
    first = api.turn("sess-root-cause", "How much is the Pro plan?", "It is $10 a month.", turn_index=0)
    second = api.turn(
        "sess-root-cause", "And the Team plan?", "It is <b>$30</b>.", turn_index=1, model_version="v2"
    )
    up = api.feedback(first, thumb=common_pb2.THUMB_UP)
    down = api.feedback(
        second,
        thumb=common_pb2.THUMB_DOWN,
        categories=["outdated_info"],
        comment="Outdated <img src=x onerror=alert(1)>",
        correction="The Team plan costs $36 a month.",
    )
    judged = api.feedback(
        second, rating=2, source=common_pb2.FEEDBACK_SOURCE_EVALUATOR, comment="judge: stale price"
    )
    session = api.ingest.GetSession(ingestion_pb2.GetSessionRequest(session_id="sess-root-cause"))
    api.close()

    reply = browser.get("/sessions/sess-root-cause")
    assert reply.status_code == 200, reply.text
    text = text_of(reply.text)
    assert "2 turns · 3 feedback" in text
    for turn in session.turns:
        it = turn.interaction
        assert f'id="{it.id}"' in reply.text
        assert f'<code class="trace-id">{it.trace_id}</code>' in reply.text and it.trace_id
        assert f'<code class="span-id">{it.span_id}</code>' in reply.text and it.span_id
    assert "model gpt v2" in text and "prompt support-answer @1" in text
    assert "user: And the Team plan?" in text
    for fid in (up, down, judged):
        assert f'id="{fid}"' in reply.text
    assert "evaluator" in text and "end user" in text
    assert "correction: The Team plan costs $36 a month." in text
    assert "outdated_info" in text
    # Feedback and responses are text: markup in them is escaped.
    assert "<img src=x" not in reply.text and "&lt;img src=x onerror=alert(1)&gt;" in reply.text
    assert "<b>$30</b>" not in reply.text
    assert re.search(rf'<section class="turn" id="{second}"', reply.text)


def test_the_session_box_opens_a_session_and_unknown_ones_are_not_found(browser: Browser) -> None:
    form = browser.get("/sessions")
    assert form.status_code == 200 and '<label for="session-id">Session id</label>' in form.text
    found = browser.get("/sessions", session_id=" a session/with odd chars ")
    assert found.status_code == 303
    assert found.headers["location"] == "/sessions/a%20session%2Fwith%20odd%20chars"
    missing = browser.client.get(found.headers["location"])
    assert missing.status_code == 404
    assert browser.get("/sessions", session_id="x" * 300).status_code == 400


def test_another_projects_session_is_not_shown(console_server: tuple[Any, str]) -> None:
    app, base_url = console_server
    api = Api(app)
    api.turn("sess-private", "secret question", "secret answer")
    api.close()
    other = Browser(base_url).sign_in(create_key(app, "read", project="other-project"))
    reply = other.get("/sessions/sess-private")
    assert reply.status_code == 404
    assert "secret answer" not in reply.text
    other.close()


def test_a_feedback_id_opens_the_feedback_in_its_session(
    console_server: tuple[Any, str], browser: Browser
) -> None:
    app, _ = console_server
    api = Api(app)
    interaction = api.turn("sess-link", "Where is my order?", "It shipped.")
    fid = api.feedback(interaction, thumb=common_pb2.THUMB_DOWN, comment="It did not ship.")
    api.close()
    reply = browser.get(f"/feedback/{fid}")
    assert reply.status_code == 303
    assert reply.headers["location"] == f"/sessions/sess-link#{fid}"
    assert f'id="{fid}"' in browser.client.get(reply.headers["location"]).text
    assert browser.get("/feedback/fb_nosuchfeedback").status_code == 404
