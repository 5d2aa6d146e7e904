"""Aggregates and dedup need "how similar are these texts": the hooks and their implementations.

`SimilarFeedback` is what an aggregate policy asks: which stored feedback in the window, in
the same group, also meeting the policy's condition, is similar to this one (itself
included). `RecallSimilarFeedback` answers it through the recall index. Without a hook an
aggregate sees only the event itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from feedbackloop.errors import InvalidArgument
from feedbackloop.policy.engine import Condition
from feedbackloop.policy.event import field_value
from feedbackloop.recall import groups
from feedbackloop.recall.index import FEEDBACK
from feedbackloop.recall.text import event_text
from feedbackloop.routing.events import build_events
from feedbackloop.store.db import Database

# texts -> unit-length vectors, shape (len(texts), dim); cosine similarity is a dot product.
Embed = Callable[[list[str]], np.ndarray]


class SimilarFeedback(Protocol):
    def similar_feedback(
        self,
        project_id: str,
        feedback_id: str,
        *,
        group: Mapping[str, str],
        min_similarity: float,
        window: timedelta,
        condition: Condition,
    ) -> list[str]:
        """Ids of feedback similar to `feedback_id` (itself included, first) that occurred in
        `window` before it, match every `group` field ("interaction.prompt_name" -> value)
        and meet the policy's `condition`."""
        ...

    def similar_to_event(
        self,
        project_id: str,
        event: Mapping[str, Any],
        *,
        group: Mapping[str, str],
        min_similarity: float,
        window: timedelta,
        condition: Condition,
    ) -> list[str]:
        """The same for an event as given (a dry run): ids of stored feedback only, never the
        event's own id (a stored feedback with that id is the event itself, perhaps edited)."""
        ...

    def issue_groups(
        self, project_id: str, feedback_ids: Sequence[str], *, min_similarity: float
    ) -> dict[str, str]:
        """For each stored feedback, the id of the lasting TopIssues group whose centroid is
        nearest it, if at least `min_similarity` alike; "" where there is none."""
        ...


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


# Group fields the vector index can filter on itself; any other group field is checked on the
# hits after they are read back from the store.
_INDEXED_GROUP_FIELDS = {
    "interaction.model_version": "model_versions",
    "interaction.prompt_name": "prompt_names",
    "feedback.user_role": "user_roles",
    "feedback.source": "sources",
}
MAX_SIMILAR = 100


class RecallSimilarFeedback:
    """Aggregates through recall: a nearest-neighbour search in Milvus around the feedback,
    restricted to the window and the group, then the policy's condition on each hit.

    Runs after the index stage, so the feedback's own vector is already in Milvus. At most
    `MAX_SIMILAR` neighbours are counted: an aggregate's `min_count` is far below that.
    """

    def __init__(self, db: Database, recall: Any) -> None:
        self._db = db
        self._recall = recall
        # Every aggregate policy of a set asks about the same feedback: read its vector and time
        # once (neither changes; a reindex gives the same vector back).
        self._target = functools.lru_cache(maxsize=64)(self._read_target)

    def _read_target(self, project_id: str, feedback_id: str) -> tuple[np.ndarray, datetime]:
        vector, feedback = self._recall.query_vector_for_feedback(project_id, feedback_id)
        return vector, feedback.occurred_at

    def similar_feedback(
        self,
        project_id: str,
        feedback_id: str,
        *,
        group: Mapping[str, str],
        min_similarity: float,
        window: timedelta,
        condition: Condition,
    ) -> list[str]:
        vector, occurred_at = self._target(project_id, feedback_id)
        neighbours = self._neighbours(
            project_id, vector, occurred_at, [feedback_id], group, min_similarity, window, condition
        )
        return [feedback_id, *neighbours]

    def similar_to_event(
        self,
        project_id: str,
        event: Mapping[str, Any],
        *,
        group: Mapping[str, str],
        min_similarity: float,
        window: timedelta,
        condition: Condition,
    ) -> list[str]:
        vector = self._recall.query_vector_for_text(event_text(event))
        occurred = field_value(event, "feedback.occurred_at")
        try:
            at = datetime.fromisoformat(occurred) if occurred else datetime.now(UTC)
        except ValueError:
            raise InvalidArgument.single(
                "event", f"feedback.occurred_at: {occurred!r} is not an ISO 8601 time"
            ) from None
        own_id = field_value(event, "feedback.id")
        exclude = [own_id] if own_id else []
        return self._neighbours(project_id, vector, at, exclude, group, min_similarity, window, condition)

    def issue_groups(
        self, project_id: str, feedback_ids: Sequence[str], *, min_similarity: float
    ) -> dict[str, str]:
        if len(feedback_ids) == 1:
            # The firing's own feedback: `similar_feedback` has just read it into the cache.
            vectors = [self._target(project_id, feedback_ids[0])[0]]
        else:
            # Many (a backtest's firings, a policy's earlier items): one batched get, not a store
            # read and two gets each through the 64-entry cache; one not indexed yet is read
            # (and embedded) the way the aggregate reads it.
            stored = self._recall.index.fetch_vectors(project_id, list(feedback_ids), FEEDBACK)
            vectors = [
                stored[fid] if fid in stored else self._target(project_id, fid)[0] for fid in feedback_ids
            ]
        with self._db.read() as session:
            found = groups.nearest(session, project_id, vectors, min_similarity)
        return dict(zip(feedback_ids, found, strict=True))

    def _neighbours(
        self,
        project_id: str,
        vector: np.ndarray,
        at: datetime,
        exclude_ids: list[str],
        group: Mapping[str, str],
        min_similarity: float,
        window: timedelta,
        condition: Condition,
    ) -> list[str]:
        """Stored feedback near `vector` in the window ending at `at`, in the group, meeting `condition`."""
        from feedbackloop.recall.filters import RecallFilter

        indexed: dict[str, list[str]] = {}
        for path, value in group.items():
            if path in _INDEXED_GROUP_FIELDS:
                indexed[_INDEXED_GROUP_FIELDS[path]] = [value]
        recall_filter = RecallFilter(
            occurred_after=at - window,
            # The window ends at the feedback itself, inclusive: +1 ms on an exclusive bound.
            occurred_before=at + timedelta(milliseconds=1),
            model_versions=indexed.get("model_versions", ()),
            prompt_names=indexed.get("prompt_names", ()),
            user_roles=indexed.get("user_roles", ()),
            sources=indexed.get("sources", ()),
        )
        hits = self._recall.search(
            project_id,
            vector,
            top_k=MAX_SIMILAR,
            min_score=min_similarity,
            recall_filter=recall_filter,
            exclude_ids=exclude_ids,
        )
        similar: list[str] = []
        with self._db.read() as session:
            events = build_events(session, [hit.feedback for hit in hits])
            for hit in hits:
                event = events[hit.feedback.id]
                if any(field_value(event, path) != value for path, value in group.items()):
                    continue
                if condition(event):  # a condition that fails on a neighbour does not count it
                    similar.append(hit.feedback.id)
        return similar
