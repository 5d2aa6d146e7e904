"""The span link settings: read from the environment, and only their documented values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from feedbackloop.config import Settings
from feedbackloop.otlp.component import sweep_interval


def test_defaults_wait_five_minutes_and_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert (settings.span_link_wait_seconds, settings.span_link_expiry) == (300.0, "keep")
    monkeypatch.setenv("FEEDBACKLOOP_SPAN_LINK_WAIT_SECONDS", "0")
    monkeypatch.setenv("FEEDBACKLOOP_SPAN_LINK_EXPIRY", "refuse")
    settings = Settings()
    assert (settings.span_link_wait_seconds, settings.span_link_expiry) == (0.0, "refuse")


@pytest.mark.parametrize(("name", "value"), [("SPAN_LINK_EXPIRY", "drop"), ("SPAN_LINK_WAIT_SECONDS", "-1")])
def test_other_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"FEEDBACKLOOP_{name}", value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


@pytest.mark.parametrize(("wait", "interval"), [(0.0, 0.1), (1.0, 0.1), (5.0, 0.5), (300.0, 1.0)])
def test_the_sweep_runs_often_enough_for_the_wait(wait: float, interval: float) -> None:
    assert sweep_interval(wait) == interval
