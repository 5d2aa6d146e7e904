"""Helpers shared by the action sinks' servicers (prompts, datasets, reviews)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from feedbackloop import fields
from feedbackloop.config import Settings
from feedbackloop.errors import InvalidArgument, NotFound, quote
from feedbackloop.routing.revisions import live_revision_number
from feedbackloop.store.db import Database
from feedbackloop.store.routing_models import PolicyRevision


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
        if not 0 <= requested <= self.maximum:
            raise InvalidArgument.single(
                "page_size", f"must be between 0 and {self.maximum} (got {requested})"
            )
        return requested or min(self.default, self.maximum)


def required(field: str, value: str) -> str:
    """A required id or name: refused when empty, too long or holding control characters."""
    return fields.require_id(field, value)


def optional(field: str, value: str) -> str:
    """An optional id or name (a filter): empty is fine, else checked as `required` does."""
    return fields.optional_id(field, value)


def live_names(session: Session, project_id: str, kind: str) -> list[str]:
    """Names of the `kind` resources (Dataset, ReviewQueue...) the live policy revision declares.

    Read from the stored canonical form, with no compile: a sink asks only whether a name it is
    handed exists, to answer NOT_FOUND rather than an empty list for a typo.
    """
    number = live_revision_number(session, project_id)
    if not number:
        return []
    canonical = session.scalar(
        select(PolicyRevision.canonical).where(
            PolicyRevision.project_id == project_id, PolicyRevision.revision == number
        )
    )
    resources = (canonical or {}).get("resources", [])
    return sorted(
        str(doc.get("metadata", {}).get("name", "")) for doc in resources if doc.get("kind") == kind
    )


def known_names(names: list[str], limit: int = 10) -> str:
    """A short list of names for an error message ("a, b, c and 4 more", or "none")."""
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


NOUNS = {"Dataset": "dataset", "ReviewQueue": "review queue", "Prompt": "prompt"}


def require_known(db: Database, project_id: str, kind: str, field: str, name: str, rows: Select[Any]) -> None:
    """NOT_FOUND unless the resource has stored `rows` or the live policy set declares it.

    Called when an answer would be empty: a typo in a name must not look like an existing,
    empty resource (a reviewer told "nothing to review" for a queue that does not exist).
    """
    with db.read() as session:
        if session.execute(rows.limit(1)).first() is not None:
            return
        declared = live_names(session, project_id, kind)
    if name not in declared:
        raise NotFound(
            field,
            f'no {NOUNS.get(kind, kind)} "{quote(name)}" in this project '
            f"(the live policy set declares: {known_names(declared)})",
        )
