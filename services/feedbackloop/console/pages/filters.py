"""The window and metadata filter that the issue, search and trend screens share.

They arrive as query parameters (a GET form, so a filtered view is a link that can be shared)
and become a FeedbackFilter. A value the server would refuse is refused here first, with the
field's name, so the page can say which input is wrong.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from feedbackloop.v1 import common_pb2

# Window choices, in days.
WINDOWS = {"1d": 1, "7d": 7, "14d": 14, "30d": 30}
DEFAULT_WINDOW = "7d"
ANY_TIME = "any"  # the search screen's "no window"

SIGNALS: list[tuple[str, Any]] = [
    (name.removeprefix("SIGNAL_").lower(), value)
    for name, value in common_pb2.Signal.items()
    if value != common_pb2.SIGNAL_UNSPECIFIED
]
SOURCES: list[tuple[str, Any]] = [
    ("end_user", common_pb2.FEEDBACK_SOURCE_END_USER),
    ("reviewer", common_pb2.FEEDBACK_SOURCE_REVIEWER),
    ("evaluator", common_pb2.FEEDBACK_SOURCE_EVALUATOR),
]
# Comma-separated text fields, each one FeedbackFilter field.
TEXT_FIELDS = ("categories", "model_versions", "prompt_names", "user_roles")
MAX_VALUES = 50
MAX_VALUE_CHARS = 200


class FilterError(ValueError):
    """A filter input the screens refuse; the message starts with the field's name."""


@dataclass
class Filter:
    """One screen's window and metadata filter, as the form shows it and the API takes it."""

    window: str = DEFAULT_WINDOW
    categories: list[str] = field(default_factory=list)
    model_versions: list[str] = field(default_factory=list)
    prompt_names: list[str] = field(default_factory=list)
    user_roles: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def days(self) -> int:
        return WINDOWS[self.window]

    @property
    def has_window(self) -> bool:
        return bool(self.window)

    def text(self, name: str) -> str:
        values: list[str] = getattr(self, name)
        return ", ".join(values)

    def is_set(self) -> bool:
        return any(getattr(self, name) for name in (*TEXT_FIELDS, "signals", "sources"))

    def proto(self) -> common_pb2.FeedbackFilter:
        signal_values = dict(SIGNALS)
        source_values = dict(SOURCES)
        return common_pb2.FeedbackFilter(
            categories=self.categories,
            model_versions=self.model_versions,
            prompt_names=self.prompt_names,
            user_roles=self.user_roles,
            signals=[signal_values[s] for s in self.signals],
            sources=[source_values[s] for s in self.sources],
        )

    def time_range(self, end: dt.datetime) -> common_pb2.TimeRange:
        window = common_pb2.TimeRange()
        window.start.FromDatetime(end - dt.timedelta(days=self.days))
        window.end.FromDatetime(end)
        return window

    def query(self, **extra: str) -> str:
        """The filter as a query string (for links that keep it), with `extra` parameters."""
        pairs: list[tuple[str, str]] = [("window", self.window or ANY_TIME)]
        pairs += [(name, self.text(name)) for name in TEXT_FIELDS if getattr(self, name)]
        pairs += [("signals", s) for s in self.signals]
        pairs += [("sources", s) for s in self.sources]
        pairs += [(k, v) for k, v in extra.items() if v]
        return urlencode(pairs)


def _split(name: str, raw: list[str]) -> list[str]:
    values: list[str] = []
    for chunk in raw:
        for value in chunk.split(","):
            value = value.strip()
            if not value:
                continue
            if len(value) > MAX_VALUE_CHARS:
                raise FilterError(f"{name}: a value is longer than {MAX_VALUE_CHARS} characters")
            if value not in values:
                values.append(value)
    if len(values) > MAX_VALUES:
        raise FilterError(f"{name}: at most {MAX_VALUES} values")
    return values


def _choices(name: str, raw: list[str], allowed: Sequence[tuple[str, object]]) -> list[str]:
    names = [n for n, _ in allowed]
    chosen = _split(name, raw)
    for value in chosen:
        if value not in names:
            raise FilterError(f"{name}: unknown value {value!r} (choose from {', '.join(names)})")
    return chosen


def parse_filter(params: QueryParams, *, default_window: str = DEFAULT_WINDOW) -> Filter:
    """The filter of a screen's query; `default_window=""` lets the window be "any time"."""
    window = params.get("window", default_window)
    if window == ANY_TIME and default_window == ANY_TIME:
        window = ""
    if window not in WINDOWS and not (window == "" and default_window == ""):
        raise FilterError(f"window: choose one of {', '.join(WINDOWS)} (got {window!r})")
    return Filter(
        window=window,
        **{name: _split(name, params.getlist(name)) for name in TEXT_FIELDS},
        signals=_choices("signals", params.getlist("signals"), SIGNALS),
        sources=_choices("sources", params.getlist("sources"), SOURCES),
    )


def bucket_seconds(days: int) -> int:
    """Hourly buckets for a one-day window, daily ones otherwise."""
    return 3600 if days <= 1 else 86400
