"""Helpers shared by the action sinks' servicers (prompts, datasets, reviews)."""

from __future__ import annotations

from dataclasses import dataclass

from feedbackloop.config import Settings
from feedbackloop.errors import InvalidArgument


@dataclass(frozen=True)
class PageLimits:
    """Page sizes of the routing lists: FEEDBACKLOOP_DEFAULT_PAGE_SIZE and _MAX_PAGE_SIZE."""

    default: int = 50
    maximum: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> PageLimits:
        return cls(settings.default_page_size, settings.max_page_size)

    def size(self, requested: int) -> int:
        """The page size for a request's page_size (0 means the default)."""
        if requested < 0 or requested > self.maximum:
            raise InvalidArgument.single(
                "page_size", f"must be between 0 and {self.maximum} (got {requested})"
            )
        return requested or min(self.default, self.maximum)


def required(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument.single(field, "is required")
    return value
