"""Which signals a stored feedback carries, and whether it is a complaint.

One definition shared by ListFeedback filters, the recall index's metadata and the policy
events, so "thumbs_down" means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Protocol

from feedbackloop.store.models import Feedback


class Complaint(Protocol):
    """What `is_negative` reads: a stored Feedback, or an event not yet stored (ingestion
    counts the session's complaints in the transaction that stores it)."""

    @property
    def thumb(self) -> str: ...
    @property
    def rating(self) -> int | None: ...
    @property
    def correction(self) -> str: ...
    @property
    def implicit(self) -> str: ...
    @property
    def categories(self) -> Sized: ...


SIGNAL_NAMES = (
    "thumbs_up",
    "thumbs_down",
    "rating",
    "category",
    "comment",
    "correction",
    "regenerate",
    "copy",
    "edit",
    "abandon",
    "rephrase",
)
# Implicit actions that say the answer did not serve the user.
NEGATIVE_IMPLICIT = frozenset({"regenerate", "edit", "abandon", "rephrase"})
LOW_RATING = 2


def signals_of(feedback: Feedback) -> list[str]:
    signals: list[str] = []
    if feedback.thumb == "up":
        signals.append("thumbs_up")
    elif feedback.thumb == "down":
        signals.append("thumbs_down")
    if feedback.rating is not None:
        signals.append("rating")
    if feedback.categories:
        signals.append("category")
    if feedback.comment:
        signals.append("comment")
    if feedback.correction:
        signals.append("correction")
    if feedback.implicit:
        signals.append(feedback.implicit)
    return signals


def is_negative(feedback: Complaint) -> bool:
    """A complaint: what TopIssues groups and policies see as `feedback.negative`.

    An explicit thumb decides; else a rating (2 or less is a complaint); else a correction, a
    negative implicit action (regenerate, edit, abandon, rephrase) or a category. Categories
    alone are not enough when a thumb up or a good rating comes with them: a schema may offer
    positive categories too ("accurate", "clear").
    """
    if feedback.thumb:
        return feedback.thumb == "down"
    if feedback.rating is not None:
        return feedback.rating <= LOW_RATING
    return bool(feedback.correction.strip() or feedback.implicit in NEGATIVE_IMPLICIT or feedback.categories)
