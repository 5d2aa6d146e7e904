"""Recall over stored feedback: index (for the pipeline), search, top issues, reindex.

Milvus is a derived index: every answer is read back from the relational store, and the
index can be rebuilt from it at any time. The model and the Milvus client are opened lazily,
so a server whose Milvus is down still ingests; jobs wait in the queue until it is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from opentelemetry import trace
from sqlalchemy import select

from feedbackloop.config import Settings
from feedbackloop.errors import InvalidArgument, Unavailable
from feedbackloop.ingestion import repository
from feedbackloop.recall.embedder import Embedder
from feedbackloop.recall.filters import RecallFilter
from feedbackloop.recall.index import (
    FEEDBACK,
    FIELDS,
    QUESTION,
    FeedbackIndex,
    FusedHit,
    IndexRow,
    is_lite_uri,
)
from feedbackloop.recall.text import EmbeddedTexts, distinct_texts, embedded_texts
from feedbackloop.store.db import Database
from feedbackloop.store.lookups import feedback_by_ids
from feedbackloop.store.models import Feedback
from feedbackloop.telemetry import tracer

log = logging.getLogger(__name__)

MAX_TOP_K = 100
REINDEX_BATCH = 256


@dataclass(frozen=True)
class Hit:
    feedback: Feedback
    score: float
    # Each field's cosine similarity, for a search over both fields (`score` is then the fused rank).
    field_scores: dict[str, float] | None = None


@dataclass(frozen=True)
class EmbeddedBatch:
    """A batch's two vectors per feedback (rows in the batch's order) and the texts behind them."""

    texts: list[EmbeddedTexts]
    feedback: np.ndarray
    question: np.ndarray


# How a search compares: the feedback field, the question field, or both fused.
MODE_FEEDBACK = FEEDBACK
MODE_QUESTION = QUESTION
MODE_BOTH = "both"
MODES = (MODE_FEEDBACK, MODE_QUESTION, MODE_BOTH)


@dataclass(frozen=True)
class Similar:
    """A SearchSimilar answer: the hits, the mode that ran and the text embedded for the query."""

    hits: list[Hit]
    mode: str
    query_text: str


@dataclass(frozen=True)
class FeedbackQuery:
    """What a search by feedback id compares with: the feedback, its texts and stored vectors."""

    feedback: Feedback
    texts: EmbeddedTexts
    vectors: dict[str, np.ndarray]

    def default_mode(self) -> str:
        """The feedback field when the feedback has words, else the question field."""
        return MODE_FEEDBACK if self.texts.worded else MODE_QUESTION


class Recall:
    def __init__(self, db: Database, embedder: Embedder, settings: Settings) -> None:
        self.db = db
        self.embedder = embedder
        self._settings = settings
        self._index: FeedbackIndex | None = None
        self._lock = threading.Lock()
        # Gets each Milvus call's duration by operation (the server's metrics); set before use.
        self.observe_milvus: Callable[[str, float], None] | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    # --- lazily opened parts ---

    @property
    def index(self) -> FeedbackIndex:
        """The Milvus index, connected and with its collection on first use."""
        with self._lock:
            if self._index is None:
                uri = self._settings.effective_milvus_uri
                try:
                    if is_lite_uri(uri):  # a Milvus Lite file: its directory must exist
                        Path(uri).parent.mkdir(parents=True, exist_ok=True)
                    index = FeedbackIndex.from_settings(self._settings, observe=self.observe_milvus)
                    index.ensure_collection(self.embedder.dimension)
                except Exception as error:
                    raise Unavailable(f"the Milvus index at {uri} is unavailable: {error}") from error
                self._index = index
            return self._index

    def reset_index(self) -> None:
        """Forget the client after a failure, so the next call reconnects."""
        with self._lock:
            if self._index is not None:
                try:
                    self._index.close()
                except Exception:  # closing a broken client may fail too; we drop it either way
                    log.debug("closing the Milvus client failed", exc_info=True)
            self._index = None

    def close(self) -> None:
        self.reset_index()

    # --- indexing ---

    def index_feedback(self, feedback: Sequence[Feedback]) -> int:
        """Embed a batch with one model call and upsert it; returns rows written."""
        if not feedback:
            return 0
        with tracer().start_as_current_span("recall.embed", attributes={"recall.batch_size": len(feedback)}):
            vectors = self.embed_feedback(feedback)
        with tracer().start_as_current_span("milvus.upsert", attributes={"recall.batch_size": len(feedback)}):
            return self.upsert_feedback(feedback, vectors)

    def embed_feedback(self, feedback: Sequence[Feedback]) -> EmbeddedBatch:
        """Both texts of every feedback, with one model call; a text that occurs more than once
        in the batch (a question asked in many sessions, or the question a wordless feedback
        uses as its own text) is embedded once."""
        texts = [embedded_texts(f, f.interaction) for f in feedback]
        unique = distinct_texts(texts)
        encoded = self.embedder.encode(unique)
        row = {text: n for n, text in enumerate(unique)}
        return EmbeddedBatch(
            texts=texts,
            feedback=encoded[[row[t.feedback] for t in texts]] if texts else encoded,
            question=encoded[[row[t.question] for t in texts]] if texts else encoded,
        )

    def upsert_feedback(self, feedback: Sequence[Feedback], vectors: EmbeddedBatch) -> int:
        rows = [
            IndexRow.from_feedback(f, f.interaction, v, q, t.has_question)
            for f, v, q, t in zip(feedback, vectors.feedback, vectors.question, vectors.texts, strict=True)
        ]
        try:
            return self.index.upsert(rows)
        except Exception:
            self.reset_index()
            raise

    def load_feedback(self, feedback_ids: Sequence[str]) -> dict[str, Feedback]:
        """Feedback rows with their interaction and categories, across projects (pipeline use)."""
        with self.db.read() as session:
            return feedback_by_ids(session, None, feedback_ids)

    def reindex(self, project_id: str) -> Iterator[tuple[int, int]]:
        """Delete the project's vectors and rebuild them from SQL; yields (done, total)."""
        ids: list[str] = []
        with self.db.read() as session:
            ids = list(
                session.scalars(
                    select(Feedback.id).where(Feedback.project_id == project_id).order_by(Feedback.id)
                )
            )
        total = len(ids)
        index = self.index
        # The collection may have been dropped under the open client (the case reindex repairs).
        index.ensure_collection(self.embedder.dimension)
        if index.layout == "legacy":
            self._migrate_layout(index, project_id)
        stale = index.query_ids(project_id, limit=16_384)
        while stale:
            index.delete(project_id, stale)
            stale = index.query_ids(project_id, limit=16_384)
        yield 0, total
        yield from self._index_ids(ids, 0, total)

    def _migrate_layout(self, index: FeedbackIndex, project_id: str) -> None:
        """Rebuild a collection of the one-vector layout in the current one, when it holds this
        project's vectors alone (the rebuild that follows then restores everything it held).
        Other projects' vectors would be lost with it: that takes a full reindex."""
        if index.holds_only(project_id):
            log.info("recall: rebuilding collection %r with feedback and question vectors", index.collection)
            index.drop()
            index.ensure_collection(self.embedder.dimension)
        else:
            log.warning(
                "recall: collection %r keeps its one-vector layout: it holds other projects' vectors "
                "too; `feedbackloop recall reindex --all-projects` rebuilds it for every project",
                index.collection,
            )

    def reindex_all(self) -> Iterator[tuple[str, int, int]]:
        """Drop the whole collection and rebuild every project's vectors; yields (project, done, total).

        Dropping rather than deleting per project also clears vectors of projects the store no
        longer knows.
        """
        with self.db.read() as session:
            ids = list(
                session.execute(
                    select(Feedback.project_id, Feedback.id).order_by(Feedback.project_id, Feedback.id)
                )
            )
        total = len(ids)
        index = self.index
        index.drop()
        index.ensure_collection(self.embedder.dimension)
        by_project: dict[str, list[str]] = {}
        for project_id, feedback_id in ids:
            by_project.setdefault(project_id, []).append(feedback_id)
        done = 0
        yield "", 0, total
        for project_id, project_ids in by_project.items():
            for progress, _ in self._index_ids(project_ids, done, total):
                yield project_id, progress, total
            done += len(project_ids)

    def _index_ids(self, ids: list[str], done: int, total: int) -> Iterator[tuple[int, int]]:
        for start in range(0, len(ids), REINDEX_BATCH):
            chunk = ids[start : start + REINDEX_BATCH]
            rows = self.load_feedback(chunk)
            self.index_feedback([rows[i] for i in chunk if i in rows])
            done += len(chunk)
            yield done, total

    # --- queries ---

    def query_vector_for_text(self, text: str) -> np.ndarray:
        if not text.strip():
            raise InvalidArgument.single("text", "must not be empty")
        # Refused before the model sees it: tokenizing a multi-megabyte query holds a worker for
        # seconds, and no stored feedback is longer than this.
        if len(text) > self._settings.max_text_chars:
            raise InvalidArgument.single(
                "text", f"is {len(text)} characters long; the limit is {self._settings.max_text_chars}"
            )
        with tracer().start_as_current_span("recall.embed_query"):
            return np.asarray(self.embedder.encode([text])[0])

    def query_vector_for_feedback(self, project_id: str, feedback_id: str) -> tuple[np.ndarray, Feedback]:
        """The feedback-field vector of a stored feedback (what aggregates compare with)."""
        query = self.query_for_feedback(project_id, feedback_id)
        return query.vectors[FEEDBACK], query.feedback

    def query_for_feedback(self, project_id: str, feedback_id: str) -> FeedbackQuery:
        """A stored feedback's texts and both vectors, from the index (else embedded now)."""
        feedback = repository.get_feedback(self.db, project_id, feedback_id)
        texts = embedded_texts(feedback, feedback.interaction)
        # Linked to the trace ingestion stored for that feedback, so the search shows up from
        # the complaint's own trace (and the complaint from the search's).
        with tracer().start_as_current_span("milvus.fetch_vector", links=_links_to(feedback)):
            stored = self.index.fetch_fields(project_id, [feedback_id])
        if all(feedback_id in stored[field] for field in FIELDS):
            return FeedbackQuery(feedback, texts, {field: stored[field][feedback_id] for field in FIELDS})
        # Not indexed yet (the pipeline is behind): embed it now, the same way the pipeline will.
        with tracer().start_as_current_span("recall.embed_query"):
            encoded = self.embed_feedback([feedback])
        return FeedbackQuery(feedback, texts, {FEEDBACK: encoded.feedback[0], QUESTION: encoded.question[0]})

    def similar(
        self,
        project_id: str,
        *,
        text: str | None = None,
        feedback_id: str | None = None,
        mode: str | None = None,
        top_k: int,
        min_score: float | None,
        recall_filter: RecallFilter | None,
    ) -> Similar:
        """SearchSimilar: by `text` or by a stored `feedback_id` (left out of the hits), in `mode`
        (one of MODES; None picks the feedback field for a text, and for an id the feedback field
        when that feedback has words, else the question field)."""
        if mode is not None and mode not in MODES:
            raise InvalidArgument.single("mode", f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        if text is not None:
            vector = self.query_vector_for_text(text)
            chosen = mode or MODE_FEEDBACK
            vectors = {FEEDBACK: vector, QUESTION: vector}
            exclude: list[str] = []
            query_text = text
        elif feedback_id is not None:
            query = self.query_for_feedback(project_id, feedback_id)
            chosen = mode or query.default_mode()
            vectors = query.vectors
            exclude = [feedback_id]
            query_text = {
                MODE_FEEDBACK: query.texts.feedback,
                MODE_QUESTION: query.texts.question,
                MODE_BOTH: "\n".join(dict.fromkeys((query.texts.feedback, query.texts.question))),
            }[chosen]
        else:
            raise InvalidArgument.single("query", "set either text or feedback_id")
        hits = self.search_mode(
            project_id,
            vectors,
            chosen,
            top_k=top_k,
            min_score=min_score,
            recall_filter=recall_filter,
            exclude_ids=exclude,
        )
        return Similar(hits, chosen, query_text)

    def search(
        self,
        project_id: str,
        vector: np.ndarray,
        *,
        top_k: int,
        min_score: float | None,
        recall_filter: RecallFilter | None,
        exclude_ids: Sequence[str] = (),
        field: str = FEEDBACK,
    ) -> list[Hit]:
        """Nearest stored feedback on one field (`feedback` or `question`)."""
        with tracer().start_as_current_span("milvus.search", attributes={"recall.top_k": top_k}):
            matches = self.index.search(
                project_id,
                vector,
                top_k=top_k,
                min_score=min_score,
                filter=recall_filter,
                exclude_ids=exclude_ids,
                field=field,
            )
        return self._hydrate(project_id, [(fid, score, None) for fid, score in matches])

    def search_mode(
        self,
        project_id: str,
        vectors: dict[str, np.ndarray],
        mode: str,
        *,
        top_k: int,
        min_score: float | None,
        recall_filter: RecallFilter | None,
        exclude_ids: Sequence[str] = (),
    ) -> list[Hit]:
        """Nearest stored feedback in `mode` (one of MODES), with one query vector per field."""
        if mode != MODE_BOTH:
            return self.search(
                project_id,
                vectors[mode],
                top_k=top_k,
                min_score=min_score,
                recall_filter=recall_filter,
                exclude_ids=exclude_ids,
                field=mode,
            )
        with tracer().start_as_current_span("milvus.hybrid_search", attributes={"recall.top_k": top_k}):
            fused: list[FusedHit] = self.index.search_both(
                project_id,
                dict(vectors),
                top_k=top_k,
                min_score=min_score,
                filter=recall_filter,
                exclude_ids=exclude_ids,
            )
        return self._hydrate(project_id, [(h.id, h.score, h.field_scores) for h in fused])

    def _hydrate(
        self, project_id: str, matches: list[tuple[str, float, dict[str, float] | None]]
    ) -> list[Hit]:
        with tracer().start_as_current_span("store.hydrate"):
            rows = repository.get_feedback_many(self.db, project_id, [fid for fid, _, _ in matches])
        # An id Milvus knows but SQL does not (a deleted row) is skipped: SQL is the truth.
        return [Hit(rows[fid], score, scores) for fid, score, scores in matches if fid in rows]

    def window_vectors(
        self, project_id: str, recall_filter: RecallFilter, start: datetime, end: datetime
    ) -> list[tuple[str, np.ndarray]]:
        """Every (feedback id, vector) matching the filter in [start, end)."""
        with tracer().start_as_current_span("milvus.query_window"):
            return list(self.index.iter_vectors(project_id, recall_filter.within(start, end)))


def _links_to(feedback: Feedback) -> list[trace.Link]:
    if not (feedback.trace_id and feedback.span_id):
        return []
    context = trace.SpanContext(
        trace_id=int(feedback.trace_id, 16),
        span_id=int(feedback.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return [trace.Link(context, {"feedbackloop.feedback_id": feedback.id})]
