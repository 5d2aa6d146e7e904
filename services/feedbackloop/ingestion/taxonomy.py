"""The category taxonomy ingestion validates against.

Until a project applies a `FeedbackSchema` policy resource, the built-in default below is
in force. The routing service installs the applied schema's categories per project.
"""

from __future__ import annotations

import threading

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

    def __init__(self, default: frozenset[str] = DEFAULT_CATEGORIES) -> None:
        self._default = default
        self._by_project: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def categories_for(self, project_id: str) -> frozenset[str]:
        return self._by_project.get(project_id, self._default)

    def install(self, project_id: str, categories: frozenset[str] | None) -> None:
        """Install a project's applied categories; None restores the built-in default."""
        with self._lock:
            if categories is None:
                self._by_project.pop(project_id, None)
            else:
                self._by_project[project_id] = categories
