"""The complaint rule in SQL (`signals_sql.negative_flag`) agrees with `signals.is_negative`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from feedbackloop.signals import is_negative
from feedbackloop.signals_sql import negative_flag
from feedbackloop.store.models import Feedback, FeedbackCategory, Project

# (thumb, rating, correction, implicit, categories): one case per branch of the rule and its edges.
CASES: list[tuple[str, int | None, str, str, list[str]]] = [
    ("down", None, "", "", []),
    ("up", None, "", "", []),
    ("up", 1, "wrong", "regenerate", ["outdated"]),  # the thumb decides over everything
    ("down", 5, "", "copy", []),
    ("", 1, "", "", []),
    ("", 2, "", "", []),  # LOW_RATING itself is a complaint
    ("", 3, "", "", []),
    ("", 5, "fix", "edit", ["unsafe"]),  # a good rating decides over words and categories
    ("", 0, "", "", []),
    ("", None, "the right answer", "", []),
    ("", None, "   ", "", []),  # whitespace alone is no correction
    ("", None, "\t\n\u3000\u00a0\u2028", "", []),  # nor is Unicode whitespace, as str.strip sees it
    ("", None, "\u200b", "", []),  # a zero-width space is not whitespace to str.strip
    ("", None, "", "regenerate", []),
    ("", None, "", "edit", []),
    ("", None, "", "abandon", []),
    ("", None, "", "rephrase", []),
    ("", None, "", "copy", []),
    ("", None, "", "", ["outdated"]),
    ("", None, "", "", ["accurate", "clear"]),
    ("", None, "", "", []),
    ("", None, "", "copy", ["praise"]),
]


def test_sql_and_python_agree_on_every_case(db: Any) -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    with db.write() as session:
        session.add(Project(id="p"))
        session.flush()
        for i, (thumb, rating, correction, implicit, categories) in enumerate(CASES):
            session.add(
                Feedback(
                    id=f"fb{i:02d}",
                    project_id="p",
                    session_id="s",
                    thumb=thumb,
                    rating=rating,
                    correction=correction,
                    implicit=implicit,
                    source="user",
                    payload_hash="h",
                    occurred_at=when,
                    categories=[FeedbackCategory(category=c, position=n) for n, c in enumerate(categories)],
                )
            )
    with db.read() as session:
        in_sql = {row[0]: row[1] for row in session.execute(select(Feedback.id, negative_flag()))}
        in_python = {f.id: int(is_negative(f)) for f in session.scalars(select(Feedback))}
    assert in_sql == in_python
    assert len(in_sql) == len(CASES)
    # The table is not trivially one-sided: both outcomes occur.
    assert 0 < sum(in_sql.values()) < len(CASES)
