"""Find similar feedback: SearchSimilar with the metadata filters, the window and the mode, over
real HTTP against a real server with the real model."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from screens_support import Api, Browser, text_of

from feedbackloop.v1 import common_pb2

PRICES = [
    "The prices it quoted are outdated, that was last year's price list.",
    "Outdated pricing again: the bot quoted last year's prices.",
]
LOGIN = [
    "The login instructions do not work, I cannot sign in to my account.",
    "I still cannot log in, the sign-in steps it gave are wrong.",
]


@pytest.fixture(scope="module")
def seeded(console_server: tuple[Any, str]) -> None:
    app, _ = console_server
    api = Api(app)
    for name, question, comments in (
        ("prices", "How much does the Pro plan cost?", PRICES),
        ("login", "How do I sign in to my account?", LOGIN),
    ):
        for i, comment in enumerate(comments):
            interaction = api.turn(f"search-{name}-{i}", question, "Here you go.")
            api.feedback(
                interaction,
                thumb=common_pb2.THUMB_DOWN,
                comment=comment,
                user=common_pb2.User(role="customer"),
            )
    old = common_pb2.Feedback().occurred_at
    old.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(days=10))
    interaction = api.turn("search-old-0", "How much does the Team plan cost?", "Here you go.")
    api.feedback(
        interaction, thumb=common_pb2.THUMB_DOWN, comment="Last year's prices, outdated.", occurred_at=old
    )
    api.wait_routed()
    api.close()


def _sessions(page: str) -> list[str]:
    return re.findall(r'href="/sessions/(search-[a-z]+-\d)#', page)


def test_similar_feedback_comes_best_first_with_its_session_in_every_mode(
    seeded: None, browser: Browser
) -> None:
    for mode, query in (
        ("auto", "the bot gives last year's prices"),
        ("feedback", "the bot gives last year's prices"),
        ("both", "the bot gives last year's prices"),
        ("question", "what does the plan cost"),
    ):
        reply = browser.get("/search", q=query, mode=mode)
        assert reply.status_code == 200, reply.text
        found = _sessions(reply.text)
        assert found and found[0].startswith(("search-prices", "search-old")), (mode, found)
        assert re.search(r'<span class="score">score [0-9.]+</span>', reply.text)
    both = browser.get("/search", q="the bot gives last year's prices", mode="both")
    assert "searched both, fused" in text_of(both.text)


def test_the_filters_and_the_window_narrow_the_hits(seeded: None, browser: Browser) -> None:
    anytime = _sessions(browser.get("/search", q="last year's prices").text)
    assert "search-old-0" in anytime
    week = _sessions(browser.get("/search", q="last year's prices", window="7d").text)
    assert week and "search-old-0" not in week
    customers = _sessions(browser.get("/search", q="last year's prices", user_roles="customer").text)
    assert customers and "search-old-0" not in customers
    agents = browser.get("/search", q="last year's prices", user_roles="agent")
    assert "0 similar feedback" in text_of(agents.text)


def test_bad_input_names_its_field_and_an_empty_box_searches_nothing(browser: Browser) -> None:
    bad_mode = browser.get("/search", q="x", mode="fuzzy")
    assert bad_mode.status_code == 400 and "mode: choose one of auto, feedback, question, both" in text_of(
        bad_mode.text
    )
    assert "q: at most 2000 characters" in text_of(browser.get("/search", q="x" * 2001).text)
    assert browser.get("/search", q="x", window="9d").status_code == 400
    empty = browser.get("/search")
    assert empty.status_code == 200 and 'id="hits-title"' not in empty.text
    assert '<label for="search-q">Text</label>' in empty.text
