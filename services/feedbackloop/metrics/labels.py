"""Bounded label values: what a client sends is folded into `other` unless it is known.

A label value is a new time series in every Prometheus that scrapes us, so nothing a client
types may become one unchecked. Known means:

- categories: those of the project's applied FeedbackSchema (the built-in default until one is);
- prompt names: the project's applied `Prompt` resources;
- prompt versions (per prompt) and model versions (per project): the first `max_versions`
  distinct values this process has seen; later ones are `other`. A deployment rolls a handful of
  versions at a time, so the first ones seen are the ones that matter, and the bound holds
  however long the process runs;
- signals and sources: the fixed vocabularies of `signals.py` and the API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from feedbackloop.signals import SIGNAL_NAMES

OTHER = "other"
# The value of a dimension a feedback does not have (session-level feedback has no prompt).
NONE = "none"
SOURCES = frozenset({"end_user", "reviewer", "evaluator"})
_SIGNALS = frozenset(SIGNAL_NAMES)


class _FirstSeen:
    """Per key, the first `limit` distinct values; thread-safe."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._values: dict[tuple[str, ...], set[str]] = {}
        self._lock = threading.Lock()

    def fold(self, key: tuple[str, ...], value: str) -> str:
        seen = self._values.get(key)
        if seen is not None and value in seen:  # the common case, without the lock
            return value
        with self._lock:
            seen = self._values.setdefault(key, set())
            if value in seen:
                return value
            if len(seen) >= self._limit:
                return OTHER
            seen.add(value)
            return value


class LabelFolder:
    """Folds feedback dimensions into bounded label values for one process."""

    def __init__(
        self,
        categories_for: Callable[[str], frozenset[str]],
        prompts_for: Callable[[str], frozenset[str]],
        max_versions: int,
    ) -> None:
        self._categories_for = categories_for
        self._prompts_for = prompts_for
        self._prompt_versions = _FirstSeen(max_versions)
        self._model_versions = _FirstSeen(max_versions)

    def category(self, project_id: str, value: str) -> str:
        return value if value in self._categories_for(project_id) else OTHER

    def prompt(self, project_id: str, name: str) -> str:
        if not name:
            return NONE
        return name if name in self._prompts_for(project_id) else OTHER

    def prompt_version(self, project_id: str, prompt: str, version: str) -> str:
        """`prompt` is the folded name: an unknown prompt's versions are not worth a series."""
        if prompt in (NONE, OTHER):
            return prompt
        if not version:
            return NONE
        return self._prompt_versions.fold((project_id, prompt), version)

    def model_version(self, project_id: str, version: str) -> str:
        if not version:
            return NONE
        return self._model_versions.fold((project_id,), version)

    @staticmethod
    def signal(value: str) -> str:
        return value if value in _SIGNALS else OTHER

    @staticmethod
    def source(value: str) -> str:
        return value if value in SOURCES else OTHER
