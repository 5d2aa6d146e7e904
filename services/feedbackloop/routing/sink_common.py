"""Helpers shared by the action sinks' servicers (prompts, datasets, reviews)."""

from __future__ import annotations

from feedbackloop.errors import InvalidArgument

DEFAULT_PAGE, MAX_PAGE = 50, 500


def page_size(size: int) -> int:
    if size < 0 or size > MAX_PAGE:
        raise InvalidArgument.single("page_size", f"must be between 0 and {MAX_PAGE} (got {size})")
    return size or DEFAULT_PAGE


def required(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument.single(field, "is required")
    return value
