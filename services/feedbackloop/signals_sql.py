"""`signals.is_negative` as a SQL expression, for counts the store aggregates (GetTrends).

The rule is the same, branch for branch; `tests/unit/test_signals_sql.py` holds the two to
agreement on a table of cases on each backend. `str.strip` removes every Unicode whitespace
character, so the trim here lists them all: SQL's one-argument TRIM removes spaces only.
"""

from __future__ import annotations

import sys

from sqlalchemy import ColumnElement, Integer, case, exists, func, literal, or_

from feedbackloop.signals import LOW_RATING, NEGATIVE_IMPLICIT
from feedbackloop.store.models import Feedback, FeedbackCategory

WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())


def negative_flag() -> ColumnElement[int]:
    """1 for a complaint, 0 otherwise, per feedback row (an integer, so SUM counts complaints)."""
    has_category = exists().where(FeedbackCategory.feedback_id == Feedback.id).correlate(Feedback)
    worded = func.trim(Feedback.correction, literal(WHITESPACE)) != ""
    return case(
        (Feedback.thumb != "", case((Feedback.thumb == "down", 1), else_=0)),
        (Feedback.rating.is_not(None), case((Feedback.rating <= LOW_RATING, 1), else_=0)),
        (or_(worded, Feedback.implicit.in_(sorted(NEGATIVE_IMPLICIT)), has_category), 1),
        else_=literal(0, Integer),
    )
