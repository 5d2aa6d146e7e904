"""The top issues screen and a group's members, over real HTTP against a real server with the
real model."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from console_support import create_key
from screens_support import Api, Browser, plots_of, text_of

from feedbackloop.v1 import common_pb2

PRICES = [
    "The prices it quoted are outdated, that was last year's price list.",
    "Outdated pricing again: the bot quoted last year's prices.",
    "It told me the old price from last year, pricing is out of date.",
    "Wrong, outdated price: the plan costs more since this year.",
]
LOGIN = [
    "The login instructions do not work, I cannot sign in to my account.",
    "I still cannot log in, the sign-in steps it gave are wrong.",
    "Its account login help is broken, signing in fails every time.",
]


@pytest.fixture(scope="module")
def seeded(console_server: tuple[Any, str]) -> Iterator[dict[str, Any]]:
    app, base_url = console_server
    api = Api(app)
    ids: dict[str, list[str]] = {"prices": [], "login": []}
    for name, comments in (("prices", PRICES), ("login", LOGIN)):
        for i, comment in enumerate(comments):
            interaction = api.turn(f"issues-{name}-{i}", "How much is the Pro plan?", "It is $10 a month.")
            ids[name].append(
                api.feedback(
                    interaction,
                    thumb=common_pb2.THUMB_DOWN,
                    comment=comment + (" <script>alert(1)</script>" if i == 0 else ""),
                    user=common_pb2.User(id=f"u{i}", role="customer"),
                )
            )
    api.wait_routed()
    api.close()
    yield {"ids": ids, "base_url": base_url}


def test_the_screen_lists_each_complaint_group_with_its_size_growth_and_daily_plot(
    seeded: dict[str, Any], browser: Browser
) -> None:
    reply = browser.get("/issues")
    assert reply.status_code == 200, reply.text
    text = text_of(reply.text)
    assert "7 complaints in the last 7d" in text
    groups = re.findall(r'data-group-id="([^"]+)"', reply.text)
    assert len(groups) == 2
    assert "4 complaints" in text and "3 complaints" in text
    assert "+300% vs previous 7d (0)" in text
    assert reply.text.count('<span class="badge new">new</span>') == 2
    plots = plots_of(reply.text)
    assert sorted(sum(p["series"][0]["values"]) for p in plots.values()) == [3, 4]
    assert all(len(p["x"]) == 7 for p in plots.values())  # one bucket a day
    assert re.search(r'<script src="/static/plots.js\?v=[0-9a-f]{12}" defer></script>', reply.text)
    # User text is escaped, never markup.
    assert "<script>alert(1)</script>" not in reply.text


def test_opening_a_group_shows_its_members_linked_to_their_sessions(
    seeded: dict[str, Any], browser: Browser
) -> None:
    listing = browser.get("/issues", window="14d").text
    link = re.search(r'<a href="(/issues/[^"?]+\?[^"]*)" data-kb-item>', listing)
    assert link
    reply = browser.get(link.group(1).replace("&amp;", "&"))
    assert reply.status_code == 200, reply.text
    members = re.findall(r'href="/sessions/(issues-[a-z]+-\d)#', reply.text)
    assert len(members) in (3, 4)
    assert len({m.rsplit("-", 1)[0] for m in members}) == 1  # one complaint: prices or login
    assert "in the last 14d" in text_of(reply.text)
    assert sum(next(iter(plots_of(reply.text).values()))["series"][0]["values"]) == len(members)


def test_a_group_not_in_the_window_is_not_found(seeded: dict[str, Any], browser: Browser) -> None:
    reply = browser.get("/issues/ig_nosuchgroup")
    assert reply.status_code == 404
    assert "No issue group ig_nosuchgroup in the last 7d" in text_of(reply.text)


def test_the_filter_narrows_the_groups_and_bad_values_name_their_field(
    seeded: dict[str, Any], browser: Browser
) -> None:
    other = browser.get("/issues", prompt_names="another-prompt")
    assert "0 complaints" in text_of(other.text)
    assert "No complaint groups in this window with this filter" in text_of(other.text)
    roles = browser.get(
        "/issues", user_roles="customer", sources="end_user", signals="thumbs_down", window="1d"
    )
    assert "7 complaints in the last 1d" in text_of(roles.text)
    assert all(len(p["x"]) == 24 for p in plots_of(roles.text).values())  # hourly for one day
    bad_window = browser.get("/issues", window="3d")
    assert bad_window.status_code == 400
    assert "window: choose one of 1d, 7d, 14d, 30d (got &#39;3d&#39;)" in bad_window.text
    bad_signal = browser.get("/issues", signals="shrug")
    assert bad_signal.status_code == 400 and "signals: unknown value" in bad_signal.text


def test_a_key_without_read_gets_the_servers_refusal(console_server: tuple[Any, str]) -> None:
    app, base_url = console_server
    ingest_only = Browser(base_url).sign_in(create_key(app, "ingest"))
    reply = ingest_only.get("/issues")
    assert reply.status_code == 403
    assert "this API key lacks the 'read' scope" in text_of(reply.text)
    ingest_only.close()


def test_a_window_larger_than_the_scan_says_the_plots_count_only_the_newest(
    seeded: dict[str, Any], browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedbackloop.console.pages import issues

    monkeypatch.setattr(issues, "SCAN_LIMIT", 2)
    monkeypatch.setattr(issues, "SCAN_PAGE", 2)
    reply = browser.get("/issues")
    assert "The plots count the newest 2 feedback of the window." in text_of(reply.text)
    assert sum(sum(p["series"][0]["values"]) for p in plots_of(reply.text).values()) == 2
