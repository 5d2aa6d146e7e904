"""Aggregates and dedup need "how similar are these texts": the hooks, and SQL-backed defaults.

`SimilarFeedback` is what an aggregate policy asks: which stored feedback in the window, in
the same group, also meeting the policy's condition, is similar to this one (itself
included). `SqlSimilarFeedback` answers it from the relational store, with cosine similarity
from an `Embed` function (the recall Embedder's `encode`) when one is given; without one the
similarity threshold is not applied (every feedback meeting the condition in the group and
window counts), which keeps aggregates usable where no model is available.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from feedbackloop.policy.celcheck import check_expression
from feedbackloop.recall.text import feedback_text
from feedbackloop.routing.events import build_event
from feedbackloop.store.db import Database
from feedbackloop.store.models import Feedback

# texts -> unit-length vectors, shape (len(texts), dim); cosine similarity is a dot product.
Embed = Callable[[list[str]], np.ndarray]
MAX_WINDOW_CANDIDATES = 5000


class SimilarFeedback(Protocol):
    def similar_feedback(
        self,
        project_id: str,
        feedback_id: str,
        *,
        group: Mapping[str, str],
        min_similarity: float,
        window: timedelta,
        when: str,
    ) -> list[str]:
        """Ids of feedback similar to `feedback_id` (itself included, first) that occurred in
        `window` before it, match every `group` field ("interaction.prompt_name" -> value)
        and satisfy the CEL condition `when`."""
        ...


class SqlSimilarFeedback:
    def __init__(self, db: Database, embed: Embed | None = None) -> None:
        self._db = db
        self._embed = embed
        self._programs: dict[str, Any] = {}

    def _program(self, when: str) -> Any:
        program = self._programs.get(when)
        if program is None:
            program, problems = check_expression(when)
            if program is None:
                raise ValueError("; ".join(problems))
            self._programs[when] = program
        return program

    def similar_feedback(
        self,
        project_id: str,
        feedback_id: str,
        *,
        group: Mapping[str, str],
        min_similarity: float,
        window: timedelta,
        when: str,
    ) -> list[str]:
        program = self._program(when)
        with self._db.read() as session:
            target = session.scalar(
                select(Feedback)
                .where(Feedback.project_id == project_id, Feedback.id == feedback_id)
                .options(selectinload(Feedback.categories), selectinload(Feedback.interaction))
            )
            if target is None:
                return []
            candidates = session.scalars(
                select(Feedback)
                .where(
                    Feedback.project_id == project_id,
                    Feedback.occurred_at >= target.occurred_at - window,
                    Feedback.occurred_at <= target.occurred_at,
                    Feedback.id != feedback_id,
                )
                .order_by(Feedback.occurred_at.desc(), Feedback.id)
                .limit(MAX_WINDOW_CANDIDATES)
                .options(selectinload(Feedback.categories), selectinload(Feedback.interaction))
            ).all()
            kept: list[Feedback] = []
            for fb in candidates:
                event = build_event(session, fb)
                if any(_field(event, path) != value for path, value in group.items()):
                    continue
                try:
                    if program.execute(dict(event)) is not True:
                        continue
                except Exception:
                    continue
                kept.append(fb)
            if not kept or self._embed is None:
                return [feedback_id, *(f.id for f in kept)]
            texts = [feedback_text(target, target.interaction)] + [
                feedback_text(f, f.interaction) for f in kept
            ]
        vectors = self._embed(texts)
        scores = vectors[1:] @ vectors[0]
        return [feedback_id, *(f.id for f, s in zip(kept, scores, strict=True) if float(s) >= min_similarity)]


def _field(event: Mapping[str, Any], path: str) -> str:
    var, _, name = path.partition(".")
    return str((event.get(var) or {}).get(name, ""))


def exact_similarity(a: str, b: str) -> float:
    """Similarity without a model: 1.0 for the same whitespace-normalised text, else 0."""
    return 1.0 if " ".join(a.split()).casefold() == " ".join(b.split()).casefold() else 0.0


def best_match(
    vector: Sequence[float] | None, text: str, existing: Sequence[tuple[str, Sequence[float] | None, str]]
) -> tuple[str, float]:
    """(id, similarity) of the most similar existing (id, vector, text); ("", 0.0) if none."""
    best = ("", 0.0)
    for item_id, other, other_text in existing:
        if vector is not None and other is not None and len(other) == len(vector):
            score = float(np.dot(np.asarray(vector, dtype=np.float32), np.asarray(other, dtype=np.float32)))
        else:
            score = exact_similarity(text, other_text)
        if score > best[1]:
            best = (item_id, score)
    return best
