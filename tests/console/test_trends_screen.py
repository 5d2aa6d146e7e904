"""Trends: volume and complaint share over time by category, prompt version, model version,
signal and issue group, with the window and filter, over real HTTP against a real server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from screens_support import Api, Browser, plots_of, text_of

from feedbackloop.v1 import common_pb2


@pytest.fixture(scope="module")
def recorded(console_server: tuple[Any, str]) -> None:
    """Model v-old: three complaints about outdated prices and one thumbs up; v-new: one thumbs up."""
    app, _ = console_server
    api = Api(app)
    for i in range(3):
        interaction = api.turn(f"trend-old-{i}", "How much is Pro?", "It is $10.", model_version="v-old")
        api.feedback(
            interaction,
            thumb=common_pb2.THUMB_DOWN,
            categories=["outdated_info"],
            comment=f"That price is from last year ({i}).",
        )
    happy = api.turn("trend-old-happy", "Hello", "Hi!", model_version="v-old")
    api.feedback(happy, thumb=common_pb2.THUMB_UP)
    fresh = api.turn("trend-new", "How much is Pro?", "It is $12.", model_version="v-new")
    api.feedback(fresh, thumb=common_pb2.THUMB_UP)
    api.wait_routed()
    api.close()


def _rows(page: str) -> dict[str, list[str]]:
    rows = re.findall(r'<tr data-key="([^"]*)">(.*?)</tr>', page, re.S)
    return {key: re.findall(r'<td class="num">([^<]*)</td>', body) for key, body in rows}


def test_trends_by_model_version_plot_volume_and_complaint_share(recorded: None, browser: Browser) -> None:
    reply = browser.get("/trends", group_by="model_version")
    assert reply.status_code == 200, reply.text
    assert "5 feedback in the last 7d, 3 complaints (60.0%)" in text_of(reply.text)
    rows = _rows(reply.text)
    assert rows["v-old"][:5] == ["4", "+400%", "3", "75.0%", "0.0%"]
    assert rows["v-new"][:5] == ["1", "+100%", "0", "0.0%", "0.0%"]
    plots = plots_of(reply.text)
    volume, share = plots["plot-volume"], plots["plot-share"]
    assert len(volume["x"]) == 7
    by_label = {s["label"]: s["values"] for s in volume["series"]}
    assert sum(by_label["v-old"]) == 4 and sum(by_label["v-new"]) == 1
    assert share["percent"] is True
    old_share = next(s["values"] for s in share["series"] if s["label"] == "v-old")
    assert [v for v in old_share if v is not None] == [0.75]  # empty days are gaps, not zeros
    assert re.search(r'<script src="/static/plots.js\?v=[0-9a-f]{12}" defer></script>', reply.text)


def test_every_dimension_and_the_window_and_filter_apply(recorded: None, browser: Browser) -> None:
    categories = _rows(browser.get("/trends").text)
    assert categories["outdated_info"][0] == "3" and categories[""][0] == "2"
    signals = _rows(browser.get("/trends", group_by="signal").text)
    assert signals["thumbs_down"][0] == "3" and signals["thumbs_up"][0] == "2"
    prompts = _rows(browser.get("/trends", group_by="prompt_version").text)
    assert prompts["support-answer@1"][0] == "5"
    issues = browser.get("/trends", group_by="issue")
    assert issues.status_code == 200, issues.text
    day = browser.get("/trends", group_by="model_version", window="1d", model_versions="v-new")
    assert set(_rows(day.text)) == {"v-new"}
    assert len(plots_of(day.text)["plot-volume"]["x"]) == 24  # hourly over one day
    bad = browser.get("/trends", group_by="weather")
    assert bad.status_code == 400 and "group_by: choose one of category" in text_of(bad.text)
    assert browser.get("/trends", window="2w").status_code == 400


def test_markup_in_a_group_name_stays_data_in_the_plot_block(
    console_server: tuple[Any, str], browser: Browser
) -> None:
    app, _ = console_server
    api = Api(app)
    hostile = "v</script><script>alert(1)</script>"
    api.feedback(api.turn("trend-hostile", "Hi", "Hello", model_version=hostile), thumb=common_pb2.THUMB_DOWN)
    api.close()
    reply = browser.get("/trends", group_by="model_version")
    assert "<script>alert(1)</script>" not in reply.text
    labels = {s["label"] for s in plots_of(reply.text)["plot-volume"]["series"]}
    assert hostile in labels  # the JSON block carries it escaped, and it reads back whole
