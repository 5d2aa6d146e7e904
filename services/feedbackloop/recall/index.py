"""`FeedbackIndex`: feedback vectors and their filterable metadata in one Milvus collection.

One code path for Milvus Lite (a local `.db` path: pymilvus starts the in-process Lite server)
and a Milvus server (`http://host:port`, optional token and db_name): everything goes through
`pymilvus.MilvusClient`. Milvus is a derived index; SQL stays the source of truth, so `drop()`
followed by re-upserting from SQL must give the same results (the tests check it does).

Tenancy: `project_id` is the collection's partition key, and every read goes through
`filters.tenant_expression`, which puts `project_id == "<p>"` first in the server-side filter.
There is no method that searches or reads without a project.

Consistency is Strong on every request: the pipeline upserts and routing searches for similar
feedback straight after, which must see the write.

Two meanings per feedback, searched apart (`recall.text`): the `feedback` field (what the user
wrote) and the `question` field (what they were asking). Where Milvus holds several vector
fields in one collection (Milvus Lite, a server from 2.4) both are fields of one collection
(`vector`, `question_vector`), and "both" is Milvus' `hybrid_search` with an `RRFRanker`. A 2.3
server allows one vector field per collection: the question vectors then live in a companion
collection, `<name>_question`, with the same scalar fields, and "both" is two searches merged
by the same reciprocal-rank formula here. A collection of the earlier one-vector layout keeps
answering (question searches use its one vector) until a full reindex rebuilds it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from feedbackloop.recall import lite_compaction, lite_query, lite_search, milvus_timing
from feedbackloop.recall.filters import RecallFilter, quote, quoted_list, shadow_text, tenant_expression
from feedbackloop.recall.text import epoch_ms
from feedbackloop.signals import is_negative, signals_of
from feedbackloop.store.models import Feedback, Interaction

log = logging.getLogger(__name__)

CONSISTENCY = "Strong"
METRIC = "COSINE"
FEEDBACK = "feedback"
QUESTION = "question"
FIELDS = (FEEDBACK, QUESTION)
# Vector field of each meaning in the one-collection layout.
VECTOR_FIELD = {FEEDBACK: "vector", QUESTION: "question_vector"}
QUESTION_COLLECTION_SUFFIX = "_question"
RRF_K = 60  # Milvus' RRFRanker default
# Milvus Lite searches its unflushed rows (the memtable) by brute force and only indexes what it
# flushes, which by default it does at 128 MiB (about 80,000 of these rows): a server that had
# just ingested a few thousand feedback searched them all row by row until a restart flushed
# them. Flushing every this many written rows keeps that part of a search small.
LITE_FLUSH_ROWS = 1024
# Milvus caps offset + limit of one query at 16,384 rows; pages stay under that.
QUERY_PAGE = 4096
MAX_TOP_K = 1024
# Most excluded ids a single-field search drops from its answer instead of filtering in Milvus.
EXCLUDED_AFTER_SEARCH = 16
ID_MAX = 128
SHORT_MAX = 256
ARRAY_CAPACITY = 64
SHADOW_MAX = 65_535  # Milvus' VARCHAR limit; 64 values of 256 chars, encoded, may exceed it
# pymilvus pings every 10 s, also while idle; Milvus Lite's in-process gRPC server allows neither,
# and after a few idle pings answers GOAWAY "too_many_pings", which gRPC logs as an error and
# which drops the channel. A loopback channel to a server in this process needs no keepalive.
LITE_CHANNEL_OPTIONS = {"grpc.keepalive_time_ms": 2**31 - 1, "grpc.keepalive_permit_without_calls": 0}


@dataclass(frozen=True)
class IndexSpec:
    """Vector index and its search-time parameters.

    HNSW by default on both backends. On Milvus Lite 3.x it is FAISS HNSW per sealed segment with
    a bitmap of rows that pass the filter: recall@10 measured 1.00 on 100k vectors with one
    metadata filter (bench/recall_bench.py). Segments not yet indexed are brute-forced. Lite's
    own executor also walks every stored row in Python per search to find the live ones;
    `lite_search` keeps that answer between searches (see there). FLAT (brute force) is exact
    but scans every vector; IVF loses recall under restrictive filters.
    """

    index_type: str = "HNSW"
    build_params: dict[str, Any] = field(default_factory=lambda: {"M": 16, "efConstruction": 200})
    search_params: dict[str, Any] = field(default_factory=lambda: {"ef": 128})


@dataclass(frozen=True)
class IndexRow:
    """One feedback as stored in Milvus. `vector` must already be L2-normalized."""

    id: str
    project_id: str
    vector: Sequence[float] | np.ndarray
    signals: Sequence[str] = ()
    categories: Sequence[str] = ()
    model_version: str = ""
    prompt_name: str = ""
    user_role: str = ""
    source: str = ""
    occurred_at: int = 0  # epoch milliseconds
    negative: bool = False
    # The question-side vector; None: the same as `vector` (a row with no question of its own).
    question_vector: Sequence[float] | np.ndarray | None = None
    has_question: bool = False

    @classmethod
    def from_feedback(
        cls,
        feedback: Feedback,
        interaction: Interaction | None,
        vector: Sequence[float] | np.ndarray,
        question_vector: Sequence[float] | np.ndarray | None = None,
        has_question: bool = False,
    ) -> IndexRow:
        """The row for a stored feedback; metadata the feedback lacks comes from its interaction."""
        return cls(
            id=feedback.id,
            project_id=feedback.project_id,
            vector=vector,
            question_vector=question_vector,
            has_question=has_question,
            signals=signals_of(feedback),
            categories=feedback.category_names,
            model_version=interaction.model_version if interaction else "",
            prompt_name=interaction.prompt_name if interaction else "",
            user_role=feedback.user_role or (interaction.user_role if interaction else ""),
            source=feedback.source,
            occurred_at=epoch_ms(feedback.occurred_at),
            negative=is_negative(feedback),
        )

    def question(self) -> np.ndarray:
        return _checked(self.vector if self.question_vector is None else self.question_vector)

    def to_entity(self, dim: int, layout: str = "multi") -> dict[str, Any]:
        """The row as Milvus stores it in `layout` (`multi`, `split` or `legacy`, see FeedbackIndex)."""
        vector = _checked(self.vector)
        if vector.shape[0] != dim:
            raise ValueError(f"feedback {self.id}: vector has {vector.shape[0]} dimensions, index has {dim}")
        if not self.id or not self.project_id:
            raise ValueError("an index row needs an id and a project_id")
        entity = self._scalars()
        entity["vector"] = vector.tolist()
        if layout != "legacy":
            entity["has_question"] = bool(self.has_question)
        if layout == "multi":
            question = self.question()
            if question.shape[0] != dim:
                raise ValueError(f"feedback {self.id}: question vector has {question.shape[0]} dimensions")
            entity["question_vector"] = question.tolist()
        return entity

    def to_question_entity(self, dim: int) -> dict[str, Any]:
        """The row of the companion question collection (the `split` layout)."""
        question = self.question()
        if question.shape[0] != dim:
            raise ValueError(f"feedback {self.id}: question vector has {question.shape[0]} dimensions")
        entity = self._scalars()
        entity["vector"] = question.tolist()
        entity["has_question"] = bool(self.has_question)
        return entity

    def _scalars(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project_id": self.project_id,
            # Oversize values are cut, not refused: the row is still worth recalling, and SQL
            # keeps the full value. Dedupe keeps arrays small and the order stable.
            "signals": [s[:SHORT_MAX] for s in dict.fromkeys(self.signals)][:ARRAY_CAPACITY],
            "categories": [c[:SHORT_MAX] for c in dict.fromkeys(self.categories)][:ARRAY_CAPACITY],
            "signals_text": shadow_text(list(dict.fromkeys(self.signals))[:ARRAY_CAPACITY]),
            "categories_text": shadow_text(list(dict.fromkeys(self.categories))[:ARRAY_CAPACITY]),
            "model_version": self.model_version[:SHORT_MAX],
            "prompt_name": self.prompt_name[:SHORT_MAX],
            "user_role": self.user_role[:SHORT_MAX],
            "source": self.source[:SHORT_MAX],
            "occurred_at": int(self.occurred_at),
            "negative": bool(self.negative),
        }


def _checked(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(vector, dtype=np.float32).reshape(-1)


def route_limit(top_k: int) -> int:
    """Candidates each field contributes to a fused search: more than `top_k`, so that a hit
    ranked fairly on both fields is not cut off by either alone."""
    return min(MAX_TOP_K, max(2 * top_k, 20))


@dataclass(frozen=True)
class FusedHit:
    """A hit of a search over both fields: its fused rank score and each field's cosine."""

    id: str
    score: float  # reciprocal-rank fusion: sum over fields of 1 / (RRF_K + rank)
    field_scores: dict[str, float]


def rrf_merge(ranked: Sequence[Sequence[str]], limit: int, k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion of ranked id lists, as Milvus' RRFRanker: best first, ties by id."""
    scores: dict[str, float] = {}
    for ids in ranked:
        for rank, fid in enumerate(ids, start=1):
            scores[fid] = scores.get(fid, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:limit]


def _version_tuple(version: str) -> tuple[int, int, int] | None:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _server_has_multi_vector(version: str) -> bool:
    """Several vector fields in one collection, and hybrid_search, came with Milvus 2.4."""
    parsed = _version_tuple(version)
    return parsed is None or parsed >= (2, 4, 0)  # unknown (a managed service): assume current


def _server_upsert_is_safe(version: str) -> bool:
    """Milvus servers before 2.3.10 compute the partition of an *upsert* from the wrong field
    (milvus-io/milvus#30607, fixed by #30772), so upserted rows land outside their project's
    partition and partition-key filters miss them. Those servers get delete + insert instead."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", version)
    if not match:
        return True  # unknown (e.g. a managed service): assume current
    return tuple(int(x) for x in match.groups()) >= (2, 3, 10)


def is_lite_uri(uri: str) -> bool:
    """A local file (Milvus Lite) rather than a server address."""
    return not re.match(r"^[a-z][a-z0-9+.-]*://", uri) or uri.startswith("file:")


class FeedbackIndex:
    """The feedback collection in Milvus Lite or a Milvus server.

    `layout` says how the two meanings are stored: `multi` (both vector fields in one
    collection), `split` (a 2.3 server: question vectors in the companion collection) or
    `legacy` (a collection of the one-vector layout, found at start: question searches fall back
    to its one vector until `drop()` and a rebuild, which a full reindex does).
    """

    def __init__(
        self,
        uri: str,
        collection: str = "feedback",
        *,
        token: str | None = None,
        db_name: str | None = None,
        spec: IndexSpec | None = None,
        timeout: float | None = 30.0,
        lite_live_row_cache: bool = True,
        lite_flush_rows: int = LITE_FLUSH_ROWS,
        lite_direct_reads: bool = True,
        observe: milvus_timing.Observe | None = None,
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.question_collection = collection + QUESTION_COLLECTION_SUFFIX
        self.spec = spec or IndexSpec()
        self._timeout = timeout
        self._db_name = db_name
        kwargs: dict[str, Any] = {"uri": uri}
        if token:
            kwargs["token"] = token
        if db_name:
            kwargs["db_name"] = db_name
        if is_lite_uri(uri):
            kwargs["grpc_options"] = LITE_CHANNEL_OPTIONS
            # Process-wide: Lite's engine is one per process, so the last index opened decides.
            if lite_live_row_cache:
                lite_search.install()
                lite_compaction.install()
            else:
                lite_search.uninstall()
                lite_compaction.uninstall()
        self._client = milvus_timing.timed(MilvusClient(**kwargs), observe)
        self._dim: int | None = None
        self._lock = threading.Lock()
        version = "" if self.is_lite else self._server_version()
        self._upsert_safe = self.is_lite or _server_upsert_is_safe(version)
        self._multi_vector = self.is_lite or _server_has_multi_vector(version)
        self._layout: str | None = None
        self._flush_rows = lite_flush_rows
        self._unflushed = 0
        # The direct reader takes its live rows and memtable arrays from `lite_search`, so turning
        # that off turns it off too: the setting then means Lite's own code on every read path.
        self._direct_reads = (
            self.is_lite and lite_direct_reads and lite_live_row_cache and lite_query.supported()
        )

    @classmethod
    def from_settings(
        cls, settings: Any, spec: IndexSpec | None = None, observe: milvus_timing.Observe | None = None
    ) -> FeedbackIndex:
        """Build from `feedbackloop.config.Settings` (typed loosely to keep this module light);
        `observe` gets the duration of each Milvus call by operation."""
        return cls(
            settings.effective_milvus_uri,
            settings.milvus_collection,
            token=settings.milvus_token,
            db_name=settings.milvus_db_name,
            spec=spec,
            lite_live_row_cache=settings.milvus_lite_live_row_cache,
            observe=observe,
        )

    @property
    def is_lite(self) -> bool:
        return is_lite_uri(self.uri)

    @property
    def layout(self) -> str:
        """`multi`, `split` or `legacy` (see the class docstring); read from Milvus on first use."""
        if self._layout is None:
            self._require_dim()
        assert self._layout is not None
        return self._layout

    def _server_version(self) -> str:
        try:
            return str(self._client.get_server_version())
        except Exception:  # a server without the RPC is new enough not to matter
            return ""

    def close(self) -> None:
        self._client.close()

    # --- collection lifecycle ---

    def ensure_collection(self, dim: int) -> None:
        """Create the collection (schema, index, loaded) if absent; check the dimension if present."""
        with self._lock:
            if self._client.has_collection(self.collection, timeout=self._timeout):
                existing = self._existing_dim()
                if existing != dim:
                    raise ValueError(
                        f"collection {self.collection!r} holds {existing}-dimensional vectors, the model "
                        f"gives {dim}: drop and rebuild the index (Reindex) after changing the model"
                    )
                self._client.load_collection(self.collection, timeout=self._timeout)
                if self._layout == "split":
                    self._client.load_collection(self.question_collection, timeout=self._timeout)
            else:
                self._create(dim)
            self._dim = dim

    def _read_layout(self) -> None:
        info = self._client.describe_collection(self.collection, timeout=self._timeout)
        names = {f["name"] for f in info["fields"]}
        if VECTOR_FIELD[QUESTION] in names:
            self._layout = "multi"
        elif "has_question" in names and self._client.has_collection(
            self.question_collection, timeout=self._timeout
        ):
            self._layout = "split"
        else:
            self._layout = "legacy"
            log.warning(
                "collection %r has the earlier one-vector layout (comment and question in one "
                "vector): searches by question use that vector; `feedbackloop recall reindex "
                "--all-projects` rebuilds it with separate feedback and question vectors",
                self.collection,
            )

    def _existing_dim(self) -> int:
        info = self._client.describe_collection(self.collection, timeout=self._timeout)
        if self._layout is None:
            self._read_layout()
        for f in info["fields"]:
            if f["name"] == "vector":
                return int(f["params"]["dim"])
        raise ValueError(f"collection {self.collection!r} has no vector field: not a feedback collection")

    def _schema(self, dim: int, vector_fields: Sequence[str]) -> Any:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX)
        schema.add_field("project_id", DataType.VARCHAR, max_length=ID_MAX, is_partition_key=True)
        for name in vector_fields:
            schema.add_field(name, DataType.FLOAT_VECTOR, dim=dim)
        for name in ("signals", "categories"):
            schema.add_field(
                name,
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=ARRAY_CAPACITY,
                max_length=SHORT_MAX,
            )
        for name in ("signals_text", "categories_text"):
            # Shadows of the arrays for Milvus Lite's fast filter path (filters.shadow_text).
            schema.add_field(name, DataType.VARCHAR, max_length=SHADOW_MAX)
        for name in ("model_version", "prompt_name", "user_role", "source"):
            schema.add_field(name, DataType.VARCHAR, max_length=SHORT_MAX)
        schema.add_field("occurred_at", DataType.INT64)
        schema.add_field("negative", DataType.BOOL)
        # False where the feedback has no question of its own (its question vector is then its
        # feedback vector): question-side searches leave such rows out.
        schema.add_field("has_question", DataType.BOOL)
        return schema

    def _create(self, dim: int) -> None:
        if self._multi_vector:
            self._create_one(self.collection, dim, list(VECTOR_FIELD.values()))
            self._layout = "multi"
        else:
            self._create_one(self.collection, dim, ["vector"])
            self._create_one(self.question_collection, dim, ["vector"])
            self._layout = "split"

    def _create_one(self, name: str, dim: int, vector_fields: Sequence[str]) -> None:
        index_params = self._client.prepare_index_params()
        for field_name in vector_fields:
            index_params.add_index(
                field_name=field_name,
                index_type=self.spec.index_type,
                metric_type=METRIC,
                params=dict(self.spec.build_params),
            )
        self._client.create_collection(
            name,
            schema=self._schema(dim, vector_fields),
            consistency_level=CONSISTENCY,
            timeout=self._timeout,
        )
        # Not waiting for the build (sync=False): the collection is empty, and the wait asks for
        # a timestamp (AllocTimestamp) that Milvus Lite does not implement, which its in-process
        # server logs as an error with a traceback on every creation.
        self._client.create_index(name, index_params, timeout=self._timeout, sync=False)
        self._client.load_collection(name, timeout=self._timeout)

    def drop(self) -> None:
        """Drop the collection (all projects; its companion too); `ensure_collection` recreates it
        empty, in the current layout."""
        with self._lock:
            for name in (self.collection, self.question_collection):
                if self._client.has_collection(name, timeout=self._timeout):
                    self._client.drop_collection(name, timeout=self._timeout)
            self._dim = None
            self._layout = None
            self._unflushed = 0

    def _require_dim(self) -> int:
        if self._dim is None:
            if not self._client.has_collection(self.collection, timeout=self._timeout):
                raise RuntimeError(f"collection {self.collection!r} does not exist: call ensure_collection")
            self._dim = self._existing_dim()
        return self._dim

    # --- writes ---

    def upsert(self, rows: Sequence[IndexRow]) -> int:
        """Insert or replace rows by feedback id; returns how many were written.

        Idempotent: the pipeline may retry a batch, and a retried row replaces itself.
        """
        if not rows:
            return 0
        dim = self._require_dim()
        layout = self.layout
        by_id = {row.id: row for row in rows}  # last one wins within a batch
        self._write(self.collection, [row.to_entity(dim, layout) for row in by_id.values()])
        if layout == "split":
            self._write(self.question_collection, [row.to_question_entity(dim) for row in by_id.values()])
        self._wrote(len(by_id))
        return len(by_id)

    def _write(self, collection: str, entities: list[dict[str, Any]]) -> None:
        if self._upsert_safe:
            self._client.upsert(collection, entities, timeout=self._timeout)
        else:
            ids = [entity["id"] for entity in entities]
            self._client.delete(collection, filter=f"id in {quoted_list(ids)}", timeout=self._timeout)
            self._client.insert(collection, entities, timeout=self._timeout)

    def _wrote(self, rows: int) -> None:
        """Flush Milvus Lite every `lite_flush_rows` written rows (see LITE_FLUSH_ROWS)."""
        if not self.is_lite or self._flush_rows <= 0:
            return
        with self._lock:
            self._unflushed += rows
            due = self._unflushed >= self._flush_rows
            if due:
                self._unflushed = 0
        if due:
            # Lite writes the rows to a segment here and indexes it on its background thread.
            self._client.flush(self.collection, timeout=self._timeout)

    def delete(self, project_id: str, ids: Sequence[str]) -> None:
        if ids:
            expr = tenant_expression(project_id) + f" and id in {quoted_list(ids)}"
            self._client.delete(self.collection, filter=expr, timeout=self._timeout)
            if self.layout == "split":
                self._client.delete(self.question_collection, filter=expr, timeout=self._timeout)
            self._wrote(len(ids))

    # --- reads ---

    def _target(self, field: str) -> tuple[str, str, bool]:
        """(collection, vector field, whether to leave out rows without a question) for `field`."""
        if field not in FIELDS:
            raise ValueError(f"unknown field {field!r}; one of {', '.join(FIELDS)}")
        layout = self.layout
        if field == FEEDBACK or layout == "legacy":
            return self.collection, "vector", False
        if layout == "split":
            return self.question_collection, "vector", True
        return self.collection, VECTOR_FIELD[QUESTION], True

    def search(
        self,
        project_id: str,
        vector: Sequence[float] | np.ndarray,
        top_k: int = 10,
        min_score: float | None = None,
        filter: RecallFilter | None = None,
        exclude_ids: Sequence[str] = (),
        field: str = FEEDBACK,
    ) -> list[tuple[str, float]]:
        """Nearest feedback in `project_id` by cosine similarity on `field`, best first.

        `min_score` drops hits below that cosine similarity (applied here, not as a Milvus range
        search, whose radius semantics differ between Lite and server versions). A question-side
        search leaves out feedback that has no question.
        """
        query = self._query(vector, top_k)
        collection, anns_field, _ = self._target(field)
        # A few excluded ids (a search by feedback id leaves out that feedback) are dropped from
        # a slightly longer answer rather than filtered in Milvus: Lite evaluates `id in [...]` on
        # every stored row and then walks the HNSW graph through a selector of the rows left, 9 of
        # the 13 ms such a search took at 100,000 rows here.
        unique = set(exclude_ids)
        dropped = unique if len(unique) <= EXCLUDED_AFTER_SEARCH else set()
        limit = top_k + len(dropped)
        result = self._client.search(
            collection,
            data=[query.tolist()],
            anns_field=anns_field,
            filter=self._field_expr(project_id, filter, () if dropped else exclude_ids, field),
            limit=limit,
            output_fields=["id"],
            search_params={"metric_type": METRIC, "params": self._search_params(limit)},
            consistency_level=CONSISTENCY,
            timeout=self._timeout,
        )
        hits: list[tuple[str, float]] = []
        for hit in result[0] if result else []:
            score = float(hit["distance"])  # COSINE: Milvus reports similarity, higher is closer
            if (min_score is not None and score < min_score) or str(hit["id"]) in dropped:
                continue
            hits.append((str(hit["id"]), score))
        # Sort by (-score, id): equal scores come back in a stable order on every backend.
        hits.sort(key=lambda h: (-h[1], h[0]))
        return hits[:top_k]

    def search_both(
        self,
        project_id: str,
        vectors: Mapping[str, Sequence[float] | np.ndarray],
        top_k: int = 10,
        min_score: float | None = None,
        filter: RecallFilter | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[FusedHit]:
        """Nearest feedback on both fields (one query vector per field), fused by reciprocal rank.

        Each field contributes its `route_limit(top_k)` nearest; a hit's `field_scores` are its
        cosine similarity to each field's query, and `min_score` keeps hits whose better field
        reaches it. The multi-vector layout asks Milvus (`hybrid_search`, `RRFRanker`); the others
        merge two searches here with the same formula.
        """
        queries = {field: self._query(vectors[field], top_k) for field in FIELDS}
        limit = route_limit(top_k)
        if self.layout == "multi":
            from pymilvus import AnnSearchRequest, RRFRanker

            requests = [
                AnnSearchRequest(
                    data=[queries[field].tolist()],
                    anns_field=VECTOR_FIELD[field],
                    param={"metric_type": METRIC, "params": self._search_params(limit)},
                    limit=limit,
                    expr=self._field_expr(project_id, filter, exclude_ids, field),
                )
                for field in FIELDS
            ]
            result = self._client.hybrid_search(
                self.collection,
                requests,
                RRFRanker(RRF_K),
                limit=limit,
                output_fields=["id"],
                consistency_level=CONSISTENCY,
                timeout=self._timeout,
            )
            fused = [(str(hit["id"]), float(hit["distance"])) for hit in (result[0] if result else [])]
            fused.sort(key=lambda h: (-h[1], h[0]))
        else:
            ranked = [
                [
                    fid
                    for fid, _ in self.search(
                        project_id, queries[field], limit, None, filter, exclude_ids, field
                    )
                ]
                for field in FIELDS
            ]
            fused = rrf_merge(ranked, limit)
        ids = [fid for fid, _ in fused]
        stored = self.fetch_fields(project_id, ids)
        hits: list[FusedHit] = []
        for fid, score in fused:
            if fid not in stored[FEEDBACK]:
                continue  # deleted between the search and the read
            scores = {
                field: float(np.dot(stored[field].get(fid, stored[FEEDBACK][fid]), queries[field]))
                for field in FIELDS
            }
            if min_score is not None and max(scores.values()) < min_score:
                continue
            hits.append(FusedHit(fid, score, scores))
        return hits[:top_k]

    def _query(self, vector: Sequence[float] | np.ndarray, top_k: int) -> np.ndarray:
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be between 1 and {MAX_TOP_K}")
        dim = self._require_dim()
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != dim:
            raise ValueError(f"query vector has {query.shape[0]} dimensions, index has {dim}")
        return query

    def _field_expr(
        self, project_id: str, recall_filter: RecallFilter | None, exclude_ids: Sequence[str], field: str
    ) -> str:
        expr = self._expr(project_id, recall_filter)
        if exclude_ids:
            expr += f" and not (id in {quoted_list(exclude_ids)})"
        if self._target(field)[2]:
            expr += " and has_question == true"
        return expr

    def _expr(self, project_id: str, recall_filter: RecallFilter | None) -> str:
        # Lite: shadow columns (vectorized LIKE); a server evaluates array_contains natively and
        # a 2.3 server's LIKE only matches prefixes, so it keeps the ARRAY form.
        return tenant_expression(project_id, recall_filter, array_shadows=self.is_lite)

    def _search_params(self, top_k: int) -> dict[str, Any]:
        params = dict(self.spec.search_params)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), top_k)  # HNSW requires ef >= k
        return params

    def fetch_vectors(
        self, project_id: str, ids: Sequence[str], field: str = FEEDBACK
    ) -> dict[str, np.ndarray]:
        """Vectors (of `field`) of the given feedback ids that belong to `project_id` (others are
        absent)."""
        return self.fetch_fields(project_id, ids, (field,))[field]

    def fetch_fields(
        self, project_id: str, ids: Sequence[str], fields: Sequence[str] = FIELDS
    ) -> dict[str, dict[str, np.ndarray]]:
        """Per field in `fields`: the vectors of the given feedback ids that belong to
        `project_id` (others are absent). Fields of one collection are read in one request.

        A primary-key `get`, not a filtered `query`: Milvus Lite answers the first from its key
        index in about a millisecond and the second by scanning every row. The project check
        happens here on the returned rows, so another tenant's id yields nothing.
        """
        # collection -> {vector field: the fields read from it} (a legacy collection's one vector
        # answers for both)
        by_collection: dict[str, dict[str, list[str]]] = {}
        for name in fields:
            collection, vector_field, _ = self._target(name)
            by_collection.setdefault(collection, {}).setdefault(vector_field, []).append(name)
        out: dict[str, dict[str, np.ndarray]] = {name: {} for name in fields}
        unique = list(dict.fromkeys(ids))
        for collection, wanted in by_collection.items():
            for start in range(0, len(unique), QUERY_PAGE):
                chunk = unique[start : start + QUERY_PAGE]
                rows = self._client.get(
                    collection,
                    ids=chunk,
                    output_fields=["id", "project_id", *wanted],
                    timeout=self._timeout,
                    consistency_level=CONSISTENCY,
                )
                for row in rows:
                    if row.get("project_id") == project_id:
                        for vector_field, names in wanted.items():
                            vector = np.asarray(row[vector_field], dtype=np.float32)
                            for name in names:
                                out[name][str(row["id"])] = vector
        return out

    def query_ids(self, project_id: str, filter: RecallFilter | None = None, limit: int = 1000) -> list[str]:
        """Ids of rows matching the filter, sorted, at most `limit` (<= 16,384, a Milvus cap)."""
        if not 1 <= limit <= 16_384:
            raise ValueError("limit must be between 1 and 16384")
        rows = self._client.query(
            self.collection,
            filter=self._expr(project_id, filter),
            output_fields=["id"],
            limit=limit,
            consistency_level=CONSISTENCY,
            timeout=self._timeout,
        )
        return sorted(str(r["id"]) for r in rows)

    def iter_vectors(
        self, project_id: str, filter: RecallFilter | None = None, page_size: int = QUERY_PAGE
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Every (id, vector) matching the filter, any number of rows (past the 16,384 query cap).

        Ascending id order. On Milvus Lite the rows are read from its engine in this process
        (`lite_query`: the stock iterator walks the whole collection in Python for every page);
        otherwise, and where that reader declines, pymilvus' query iterator pages by primary key
        (on both Lite and a 2.3+ server, checked in the tests), in bounded memory.
        """
        expr = self._expr(project_id, filter)
        if self._direct_reads:
            rows = self._lite_rows(expr, "vector")
            if rows is not None:
                for fid, vector in zip(rows.ids, rows.vectors, strict=True):
                    yield str(fid), vector
                return
        iterator = self._client.query_iterator(
            self.collection,
            batch_size=page_size,
            filter=expr,
            output_fields=["id", "vector"],
            consistency_level=CONSISTENCY,
            timeout=self._timeout,
        )
        try:
            while True:
                page = iterator.next()
                if not page:
                    return
                for row in page:
                    yield str(row["id"]), np.asarray(row["vector"], dtype=np.float32)
        finally:
            iterator.close()

    def _lite_rows(self, expr: str, vector_field: str) -> lite_query.Rows | None:
        collection = lite_query.engine_collection(self.uri, self.collection, self._db_name)
        return None if collection is None else lite_query.read(collection, expr, vector_field)

    def holds_only(self, project_id: str) -> bool:
        """Whether every vector in the collection belongs to `project_id` (or there are none)."""
        rows = self._client.query(
            self.collection,
            filter=f"project_id != {quote(project_id)}",
            output_fields=["id"],
            limit=1,
            consistency_level=CONSISTENCY,
            timeout=self._timeout,
        )
        return not rows

    def exists(self) -> bool:
        """Whether the collection is there (it may have been dropped or lost under us)."""
        return bool(self._client.has_collection(self.collection, timeout=self._timeout))

    def total_count(self) -> int | None:
        """Vectors held for every project, where the backend knows it without a scan, else None.

        Milvus Lite's collection statistics are its live rows (upserts and deletes applied, the
        unflushed ones included), read in well under a millisecond; its `count(*)` with a filter
        walks every stored row in Python (about 25 µs a row). A server's statistics still
        count deleted rows until compaction, but its filtered `count(*)` is cheap.
        """
        if not self.is_lite:
            return None
        stats = self._client.get_collection_stats(self.collection, timeout=self._timeout)
        return int(stats["row_count"])

    def project_count(self, project_id: str) -> int:
        """Vectors held for one project; 0 when the collection itself is gone."""
        if not self.exists():
            return 0
        return self.count(project_id)

    def count(self, project_id: str, filter: RecallFilter | None = None) -> int:
        rows = self._client.query(
            self.collection,
            filter=self._expr(project_id, filter),
            output_fields=["count(*)"],
            consistency_level=CONSISTENCY,
            timeout=self._timeout,
        )
        return int(rows[0]["count(*)"]) if rows else 0
