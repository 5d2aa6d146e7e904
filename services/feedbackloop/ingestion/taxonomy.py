"""The category taxonomy ingestion validates against.

Until a project applies a `FeedbackSchema` policy resource, the built-in default below is
in force. The routing service installs the applied schema's categories per project, and the
taxonomy asks it again when its copy of a project is older than `max_age_seconds`: another
process (a separate ingest deployment, or the one that ran the apply) may have moved the live
revision, and a process that only ingests has no route stage that would notice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_CATEGORIES = frozenset(
    {
        "hallucination",
        "outdated_info",
        "wrong_tone",
        "unhelpful",
        "incomplete",
        "too_long",
        "wrong_language",
        "refused",
        "unsafe",
        "formatting",
        "other",
    }
)


class Taxonomy:
    """Categories in force per project; thread-safe, swapped whole on policy apply."""

    def __init__(
        self,
        default: frozenset[str] = DEFAULT_CATEGORIES,
        *,
        max_age_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = default
        self._max_age = max_age_seconds
        self._clock = clock
        self._by_project: dict[str, frozenset[str]] = {}
        self._checked_at: dict[str, float] = {}
        self._source: Callable[[str], object] | None = None
        self._lock = threading.Lock()

    def follow(self, source: Callable[[str], object]) -> None:
        """Re-read a project through `source` (which calls `install`) once its copy is stale."""
        self._source = source

    def categories_for(self, project_id: str) -> frozenset[str]:
        if self._source is not None and self._stale(project_id):
            try:
                self._source(project_id)
            except Exception as error:  # validation goes on with the copy it has
                log.warning("could not re-read the feedback schema of project %s: %s", project_id, error)
        return self._by_project.get(project_id, self._default)

    def _stale(self, project_id: str) -> bool:
        now = self._clock()
        with self._lock:
            if now - self._checked_at.get(project_id, -float("inf")) < self._max_age:
                return False
            self._checked_at[project_id] = now  # one re-read per interval, not one per waiting request
            return True

    def install(self, project_id: str, categories: frozenset[str] | None) -> None:
        """Install a project's applied categories; None restores the built-in default."""
        with self._lock:
            self._checked_at[project_id] = self._clock()
            if categories is None:
                self._by_project.pop(project_id, None)
            else:
                self._by_project[project_id] = categories
