"""A search executor for Milvus Lite that keeps each segment set's live rows between searches.

Why: Milvus Lite 3.2.2 decides on every search which stored rows are live (the newest version of
their primary key, not deleted) by walking every row of every segment twice in Python. At
100,000 rows that walk is most of a filtered top-10 search (README, Benchmarks: p50 66 ms with
the stock executor, 10.5 ms with this one, same collection and day). The answer only changes
when the segments do (a flush or a compaction) or when deletes and unflushed writes arrive, and
those are few next to the stored rows. So this executor works the live rows of a segment set out once,
keeps them, and per search only applies what the memtable and the tombstones change: its cost
follows the unflushed writes and the tombstones that compaction has not yet dropped, not the
stored rows.

Results are the same as the stock executor's, row for row and score for score (the same segment
index is asked the same question); `tests/unit/recall/test_lite_search.py` checks that on
histories of inserts, upserts, deletes, flushes and partitions. Milvus Lite runs in this process
(its gRPC server is a thread), so the executor is swapped in where its collection module looks
it up. `install()` does that only for the Lite version this was checked against, and the setting
`milvus_lite_live_row_cache` turns it off.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from feedbackloop.recall.lite_patch import LitePatch

log = logging.getLogger(__name__)

# The Lite versions whose executor contract (arguments, result shape, tie order) this matches.
CHECKED_VERSIONS = frozenset({"3.2.2"})
# Segment sets kept. A search sees one set at a time, but a flush racing a search may briefly
# leave two in use. An entry holds its segments (their ids are its key), so a new set evicts
# every set with a segment it no longer has (see `_LiveRowCache.get`).
CACHED_SEGMENT_SETS = 2


class _SegmentSetLiveRows:
    """For one ordered set of segments: which rows are the newest version of their key.

    Tombstones and the memtable are applied per search, on copies of the masks they touch.
    Lite gives every write its own sequence number, so one key never has two rows with the same
    one, and the newest row of a key does not depend on the order the segments are walked in.

    `base`, the entry of a subset of `segments` (the set before a flush added a segment, or the
    set a compaction primed before its swap, which flushes may have grown meanwhile), is
    extended rather than rebuilt: only the rows of the segments it lacks are walked, and the
    base's masks are copied only where a new row supersedes one of them. The base is not changed.
    """

    def __init__(self, segments: tuple[Any, ...], base: _SegmentSetLiveRows | None = None) -> None:
        self.segments = segments  # held so that the segments' ids in the cache key stay theirs
        self.slot: dict[int, int] = {id(seg): i for i, seg in enumerate(segments)}
        inherited = base.slot if base is not None else {}
        self.newest_seq: dict[Any, int] = dict(base.newest_seq) if base is not None else {}
        # key -> (id of the segment holding its newest row, row): ids, not positions, so that a
        # base whose segments sit at other positions here is reused as it is
        self.place: dict[Any, tuple[int, int]] = dict(base.place) if base is not None else {}
        masks: dict[int, np.ndarray] = (
            {seg_id: base.masks[i] for seg_id, i in inherited.items()} if base is not None else {}
        )
        own: set[int] = set()  # masks this entry may change
        for seg in segments:
            seg_id = id(seg)
            if seg_id in inherited:
                continue
            mask = masks[seg_id] = np.zeros(seg.num_rows, dtype=bool)
            own.add(seg_id)
            for row, (pk, seq) in enumerate(zip(seg.pks, seg.seqs.tolist(), strict=True)):
                known = self.newest_seq.get(pk)
                if known is not None:
                    if seq < known:
                        continue
                    old_id, old_row = self.place[pk]  # superseded by this row
                    if old_id not in own:
                        masks[old_id] = masks[old_id].copy()
                        own.add(old_id)
                    masks[old_id][old_row] = False
                self.newest_seq[pk] = seq
                self.place[pk] = (seg_id, row)
                mask[row] = True
        self.masks: tuple[np.ndarray, ...] = tuple(masks[id(seg)] for seg in segments)


class _LiveRowCache:
    def __init__(self, capacity: int = CACHED_SEGMENT_SETS) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[int, ...], _SegmentSetLiveRows] = OrderedDict()
        # Sets a compaction worked out before its swap, for searches not yet asking for them;
        # they only serve as bases, and leave once used or dropped (see `prime`).
        self._primed: dict[tuple[int, ...], _SegmentSetLiveRows] = {}
        self._lock = threading.Lock()

    def get(self, segments: tuple[Any, ...]) -> _SegmentSetLiveRows:
        key = _key(segments)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            members = set(key)
            entry = self._primed.get(key)  # worked out before a compaction's swap: taken as it is
            if entry is None:
                subsets = [
                    e for k, e in (*self._entries.items(), *self._primed.items()) if members.issuperset(k)
                ]
                base = max(subsets, key=lambda e: len(e.segments), default=None)
        if entry is None:
            entry = _SegmentSetLiveRows(segments, base)  # outside the lock: searches go on meanwhile
        with self._lock:
            # A set with a segment the new one lacks is from before a compaction: holding it
            # would keep replaced segments (their vectors and indexes) in memory. A set that a
            # flush extended holds nothing the new one does not, and a search that started
            # before the flush may still ask for it.
            for old in [k for k in self._entries if not members.issuperset(k)]:
                del self._entries[old]
            for used in [k for k in self._primed if members.issuperset(k)]:
                del self._primed[used]
            self._entries[key] = entry
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return entry

    def prime(self, segments: tuple[Any, ...]) -> None:
        """Work out `segments`' live rows now, for the first search that asks for them."""
        entry = _SegmentSetLiveRows(segments)
        with self._lock:
            self._primed[_key(segments)] = entry

    def drop_primed(self, segments: tuple[Any, ...]) -> None:
        with self._lock:
            self._primed.pop(_key(segments), None)


def _key(segments: tuple[Any, ...]) -> tuple[int, ...]:
    return tuple(id(seg) for seg in segments)


def searched(segments: Iterable[Any], partition_names: Sequence[str] | None = None) -> tuple[Any, ...]:
    """The segments a search over `partition_names` (None: all) reads, in Lite's order: the key
    its live rows are kept under."""
    wanted = set(partition_names) if partition_names else None
    return tuple(seg for seg in segments if seg.num_rows > 0 and (wanted is None or seg.partition in wanted))


def prime(segments: Iterable[Any]) -> tuple[Any, ...]:
    """Work out the live rows of the segment set `segments` will be, before it is: a compaction
    calls this before its swap, so that the first search after it does not walk every row of the
    merged segment (about 80 ms at 100,000 rows here). Then `adopt` that set, or `drop_primed`.
    Returns the set, as searches will key it."""
    wanted = searched(segments)
    if wanted and in_use():
        _cache.prime(wanted)
    return wanted


def adopt(segments: Iterable[Any]) -> None:
    """Make `segments` (all of a collection's, after a swap) the kept set now, from what was
    primed, so that no search builds it, and drop what it replaced."""
    wanted = searched(segments)
    if wanted and in_use():
        _cache.get(wanted)


def drop_primed(segments: tuple[Any, ...]) -> None:
    """Forget a primed set if no search took it up (a no-op after `adopt`): its compaction was
    abandoned or failed, or the collection was released meanwhile."""
    _cache.drop_primed(segments)


_cache = _LiveRowCache()
_EMPTY = _SegmentSetLiveRows(())


class _SearchMasks:
    """One search's live masks: the cached ones, copied only where this search changes them."""

    def __init__(self, live: _SegmentSetLiveRows) -> None:
        self._live = live
        self._masks = list(live.masks)
        self._copied: set[int] = set()

    def newest_seq(self, pk: Any) -> int | None:
        return self._live.newest_seq.get(pk)

    def known_keys(self) -> dict[Any, int]:
        """The keys that have a row in the segments (a mapping: membership tests only)."""
        return self._live.newest_seq

    def kill_if_older(self, pk: Any, seq: int) -> None:
        """A write or delete with `seq` hides the segment rows of `pk` that are older."""
        newest = self._live.newest_seq.get(pk)
        if newest is None or newest >= seq:
            return
        seg_id, row = self._live.place[pk]
        seg_index = self._live.slot[seg_id]
        if seg_index not in self._copied:
            self._masks[seg_index] = self._masks[seg_index].copy()
            self._copied.add(seg_index)
        self._masks[seg_index][row] = False

    def mask(self, seg_index: int) -> np.ndarray:
        return self._masks[seg_index]


def live_masks(
    in_scope: tuple[Any, ...], mt_pks: Sequence[Any], mt_seqs: np.ndarray, delta_index: Any, memtable: Any
) -> tuple[_SearchMasks, np.ndarray]:
    """Which rows are live: per-segment masks, and one mask over the memtable's rows.

    A row is live unless a newer row of its key (in a segment or the memtable), a tombstone or an
    unflushed delete exists, as Lite's own bitmap has it.
    """
    masks = _SearchMasks(_cache.get(in_scope) if in_scope else _EMPTY)
    tombstones: dict[Any, int] = delta_index.snapshot
    unflushed_deletes: dict[Any, tuple[int, Any]] = memtable.delete_index_snapshot()
    for pk, seq in tombstones.items():
        masks.kill_if_older(pk, seq)
    for pk, (seq, _partition) in unflushed_deletes.items():
        masks.kill_if_older(pk, seq)
    # Only the memtable rows whose key appears in a segment, a tombstone or an unflushed delete
    # need looking at.
    mt_live = np.ones(len(mt_pks), dtype=bool)
    known = masks.known_keys()
    touched = [
        row for row, pk in enumerate(mt_pks) if pk in known or pk in tombstones or pk in unflushed_deletes
    ]
    seqs = mt_seqs.tolist() if touched else []
    for row in touched:
        pk, seq = mt_pks[row], seqs[row]
        masks.kill_if_older(pk, seq)
        newest = masks.newest_seq(pk)
        deleted_at = unflushed_deletes.get(pk, (-1, None))[0]
        mt_live[row] = (
            (newest is None or newest <= seq) and tombstones.get(pk, -1) <= seq and deleted_at <= seq
        )
    return masks, mt_live


def execute_search_with_index(
    query_vectors: np.ndarray,
    segments: Iterable[Any],
    memtable: Any,
    delta_index: Any,
    top_k: int,
    metric_type: str,
    pk_field: str,
    vector_field: str,
    partition_names: list[str] | None = None,
    compiled_filter: Any = None,
    output_fields: list[str] | None = None,
    indexed_filter_plan: Any = None,
    project_record_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    search_params: dict[str, Any] | None = None,
) -> list[list[dict[str, Any]]]:
    """Drop-in for `milvus_lite.search.executor_indexed.execute_search_with_index` (3.2.2)."""
    from milvus_lite.search.filter import evaluate_mask
    from milvus_lite.search.indexed_filter import evaluate_segment_filter

    queries = np.asarray(query_vectors, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries.reshape(1, -1)
    nq = int(queries.shape[0])
    if nq == 0 or top_k <= 0:
        return [[] for _ in range(nq)]

    in_scope = searched(segments, partition_names)
    mt_pks, mt_seqs, mt_vectors, mt_refs, mt_table, mt_units = memtable_snapshot(
        memtable, vector_field, partition_names, include_table=compiled_filter is not None
    )
    if not in_scope and not mt_pks:
        return [[] for _ in range(nq)]

    masks, mt_live = live_masks(in_scope, mt_pks, mt_seqs, delta_index, memtable)

    candidates: list[list[tuple[float, int, int]]] = [[] for _ in range(nq)]
    for seg_index, seg in enumerate(in_scope):
        live = masks.mask(seg_index)
        if compiled_filter is not None:
            live = live & evaluate_segment_filter(seg, compiled_filter, indexed_filter_plan).astype(bool)
        vectors, valid_vectors = seg.vector_data(vector_field)
        if valid_vectors is not None:
            live = live & valid_vectors
        index = seg.indexes.get(vector_field)
        if index is None:
            index = _unindexed.brute_force(seg, vector_field, vectors, metric_type)
        _collect(candidates, seg_index, live, vectors, index, queries, top_k, metric_type, search_params)
    _unindexed.keep_only(in_scope, vector_field)
    if mt_pks:
        if mt_table is not None:
            mt_live &= evaluate_mask(compiled_filter, mt_table).astype(bool)
        source = len(in_scope)
        mt_index = _UnitBruteForce(mt_units) if mt_units is not None and metric_type == "COSINE" else None
        _collect(
            candidates, source, mt_live, mt_vectors, mt_index, queries, top_k, metric_type, search_params
        )

    project = _projection(project_record_fn, output_fields, pk_field, vector_field)
    # "*" asks for every field (Lite's projection expands it), as no list does
    wanted_fields = (
        None if output_fields is None or "*" in output_fields else frozenset((pk_field, *output_fields))
    )
    results: list[list[dict[str, Any]]] = []
    for per_query in candidates:
        per_query.sort()  # by distance, then source, then row: the stock executor's tie order
        hits = []
        for distance, source, row in per_query[:top_k]:
            if source < len(in_scope):
                record = _segment_row(in_scope[source], row, wanted_fields)
                pk = record[pk_field] if pk_field in record else in_scope[source].pks[row]
            else:
                record = memtable.materialize_row(*mt_refs[row])
                pk = record[pk_field] if pk_field in record else mt_pks[row]
            hits.append({"id": pk, "distance": distance, "entity": project(record)})
        results.append(hits)
    return results


class _MemtableVectors:
    """One memtable's insert batches as NumPy arrays, converted once per batch.

    Lite's own snapshot turns every live memtable row's vector into a Python list and back on
    every search (about 25 µs a row): with a few thousand rows not yet flushed, which is what a
    server holds after it has just ingested them, that was most of a search. Insert batches are
    immutable and only ever appended, so their vectors, keys and partitions are read once.
    """

    def __init__(self, memtable: Any) -> None:
        self.memtable = memtable  # held so that the id in the cache key stays its own
        self.batches: list[Any] = []
        self.vectors: dict[str, list[np.ndarray]] = {}
        self.partitions: list[np.ndarray] = []
        self.offsets: list[int] = [0]
        self._stacked: dict[str, tuple[int, np.ndarray]] = {}
        self._units: dict[str, tuple[int, np.ndarray]] = {}
        self._scalars: tuple[int, Any] | None = None

    def extend(self, batches: Sequence[Any]) -> None:
        for batch in batches[len(self.batches) :]:
            self.batches.append(batch)
            self.partitions.append(np.asarray(batch.column("_partition").to_numpy(zero_copy_only=False)))
            self.offsets.append(self.offsets[-1] + batch.num_rows)
        for field_name, converted in self.vectors.items():
            for batch in self.batches[len(converted) :]:
                converted.append(_batch_vectors(batch, field_name))

    def stacked(self, field_name: str) -> np.ndarray:
        """Every batch's vectors of `field_name`, one matrix, rows in batch order."""
        converted = self.vectors.setdefault(field_name, [])
        for batch in self.batches[len(converted) :]:
            converted.append(_batch_vectors(batch, field_name))
        cached = self._stacked.get(field_name)
        if cached is None or cached[0] != len(converted):
            cached = (
                len(converted),
                np.concatenate(converted) if converted else np.zeros((0, 0), np.float32),
            )
            self._stacked[field_name] = cached
        return cached[1]

    def units(self, field_name: str) -> np.ndarray:
        """`stacked(field_name)` scaled to unit length (what a cosine brute force compares)."""
        stacked = self.stacked(field_name)
        cached = self._units.get(field_name)
        if cached is None or cached[0] != len(self.batches):
            cached = (len(self.batches), unit_rows(stacked))
            self._units[field_name] = cached
        return cached[1]

    def scalars(self) -> Any:
        """The batches as one table without vector or WAL columns: what a filter reads.

        Lite's snapshot copies the vectors into the table it filters too; a filter never reads them.
        """
        import pyarrow as pa  # type: ignore[import-untyped]

        if self._scalars is None or self._scalars[0] != len(self.batches):
            table = pa.Table.from_batches(self.batches)
            drop = [
                name
                for name, kind in zip(table.column_names, table.schema.types, strict=True)
                if name == "_partition" or pa.types.is_fixed_size_list(kind)
            ]
            self._scalars = (len(self.batches), table.drop(drop))
        return self._scalars[1]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as Lite's cosine distance scales them (zero rows kept at zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def _batch_vectors(batch: Any, field_name: str) -> np.ndarray:
    column = batch.column(field_name)
    if column.null_count:
        raise _NullVectors
    width = column.type.list_size
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, width)


class _NullVectors(Exception):
    """A batch with null vectors: Lite's own snapshot handles those (as zero vectors)."""


_memtables_lock = threading.Lock()
_memtables: dict[int, _MemtableVectors] = {}


def memtable_snapshot(
    memtable: Any, vector_field: str, partition_names: list[str] | None, include_table: bool
) -> tuple[list[Any], np.ndarray, np.ndarray, list[tuple[int, int]], Any, np.ndarray | None]:
    """`memtable.to_search_snapshot(...)`, the same rows in the same order, from arrays, and the
    rows' unit vectors (None where Lite's own snapshot had to be used).

    The key walk stays (its order is the stock executor's candidate order), but each row costs a
    dictionary step instead of a list conversion of its vector. The filter table holds the
    scalar columns only.
    """
    import pyarrow as pa

    with memtable._lock:  # the lock Lite's own snapshot takes: batches and keys agree
        batches = tuple(memtable._insert_batches)
        positions = list(memtable._pk_index.items())
    with _memtables_lock:
        converted = _memtables.get(id(memtable))
        if converted is None:
            # A flush swaps in a new memtable; the old one's arrays go with it.
            _memtables.clear()
            converted = _memtables[id(memtable)] = _MemtableVectors(memtable)
        try:
            converted.extend(batches)
            vectors_all = converted.stacked(vector_field) if positions else None
            units_all = converted.units(vector_field) if positions else None
        except _NullVectors:
            pks_, seqs_, vectors_, refs_, table_ = memtable.to_search_snapshot(
                vector_field=vector_field, partition_names=partition_names, include_table=include_table
            )
            return pks_, seqs_, vectors_, refs_, table_, None
        offsets = np.asarray(converted.offsets, dtype=np.int64)
        partitions = converted.partitions
        scalars = converted.scalars() if include_table and positions else None
    pks = [pk for pk, _ in positions]
    batch_of = np.fromiter((p[0] for _, p in positions), dtype=np.int64, count=len(positions))
    row_of = np.fromiter((p[1] for _, p in positions), dtype=np.int64, count=len(positions))
    seqs = np.fromiter((p[2] for _, p in positions), dtype=np.uint64, count=len(positions))
    if partition_names is not None and positions:
        wanted = set(partition_names)
        keep = np.fromiter(
            (partitions[b][r] in wanted for b, r in zip(batch_of.tolist(), row_of.tolist(), strict=True)),
            dtype=bool,
            count=len(positions),
        )
        if not keep.all():
            pks = [pk for pk, k in zip(pks, keep.tolist(), strict=True) if k]
            batch_of, row_of, seqs = batch_of[keep], row_of[keep], seqs[keep]
    flat = offsets[batch_of] + row_of
    refs = list(zip(batch_of.tolist(), row_of.tolist(), strict=True))
    vectors = (
        vectors_all[flat] if vectors_all is not None and len(pks) else np.zeros((0, 0), dtype=np.float32)
    )
    units = units_all[flat] if units_all is not None and len(pks) else None
    table = None
    if include_table:
        if not len(pks) or scalars is None:
            table = memtable._data_schema.empty_table()
        else:
            table = scalars.take(pa.array(flat, type=pa.int64()))
    return pks, seqs, vectors, refs, table, units


class _UnitBruteForce:
    """Lite's `BruteForceIndex` for COSINE over rows already scaled to unit length.

    Lite's brute force rescales every candidate row on every search; the same arithmetic done
    once gives the same distances (each row is scaled on its own), so the answers stay equal.
    """

    def __init__(self, units: np.ndarray) -> None:
        self._units = units

    def search(
        self,
        queries: np.ndarray,
        top_k: int,
        valid_mask: np.ndarray | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        nq = int(queries.shape[0])
        result_ids = np.full((nq, top_k), -1, dtype=np.int64)
        result_dists = np.full((nq, top_k), np.inf, dtype=np.float32)
        n = int(self._units.shape[0])
        valid = np.arange(n, dtype=np.int64) if valid_mask is None else np.flatnonzero(valid_mask)
        if n == 0 or top_k <= 0 or valid.size == 0:
            return result_ids, result_dists
        candidates = self._units if valid_mask is None else self._units[valid]
        q_norms = np.linalg.norm(queries, axis=1, keepdims=True)
        q_unit = queries / np.where(q_norms == 0, 1.0, q_norms)
        all_dists = np.maximum(1.0 - q_unit @ candidates.T, 0.0)
        k = min(top_k, valid.size)
        for q in range(nq):
            dists = all_dists[q]
            if k < valid.size:
                part = np.argpartition(dists, k - 1)[:k]
                order = part[np.argsort(dists[part])]
            else:
                order = np.argsort(dists)
            chosen = order[:k]
            result_ids[q, :k] = valid[chosen]
            result_dists[q, :k] = dists[chosen]
        return result_ids, result_dists


class _UnindexedSegments:
    """Unit vectors of segments Lite has flushed but not yet indexed, kept until it has.

    Lite builds a new segment's index on a background thread, and compaction replaces small
    indexed segments by a merged one that is brute-forced until its own index is built.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, str], tuple[Any, _UnitBruteForce]] = {}

    def brute_force(self, segment: Any, field_name: str, vectors: np.ndarray, metric_type: str) -> Any:
        if metric_type != "COSINE":
            return None  # `_collect` falls back to Lite's own brute force
        key = (id(segment), field_name)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] is not segment:
            entry = (segment, _UnitBruteForce(unit_rows(np.asarray(vectors, dtype=np.float32))))
            with self._lock:
                self._entries[key] = entry
        return entry[1]

    def keep_only(self, segments: Sequence[Any], field_name: str) -> None:
        """Forget segments that are gone or indexed (searched without `brute_force` now)."""
        with self._lock:
            if not self._entries:
                return
            current = {id(seg): seg for seg in segments if seg.indexes.get(field_name) is None}
            for key, (segment, _) in list(self._entries.items()):
                if key[1] == field_name and current.get(key[0]) is not segment:
                    del self._entries[key]


_unindexed = _UnindexedSegments()


def _collect(
    candidates: list[list[tuple[float, int, int]]],
    source: int,
    live: np.ndarray,
    vectors: np.ndarray,
    index: Any,
    queries: np.ndarray,
    top_k: int,
    metric_type: str,
    search_params: dict[str, Any] | None,
) -> None:
    """Add one source's top-k live rows per query to the candidates."""
    if len(live) == 0 or not live.any():
        return
    if index is None:
        from milvus_lite.index.brute_force import BruteForceIndex

        index = BruteForceIndex.build(vectors, metric_type)
    # No mask when every row is live: a mask makes HNSW filter while it walks, which the stock
    # executor also avoids, and results must match it.
    rows, distances = index.search(
        queries, top_k, valid_mask=None if live.all() else live, params=search_params
    )
    for q in range(queries.shape[0]):
        for row, distance in zip(rows[q].tolist(), distances[q].tolist(), strict=True):
            if row < 0:
                break  # -1 pads the rest
            candidates[q].append((float(distance), source, row))


def _segment_row(segment: Any, row: int, fields: frozenset[str] | None) -> dict[str, Any]:
    """The fields of `row` a hit shows (`fields`; None: all), as Lite's `row_to_dict` gives them.

    Why: `row_to_dict` converts every column of the row, its vectors (two of 384 floats here) and
    long shadow texts among them, to Python objects, for a projection that then keeps the id:
    about a tenth of a search over a collection of eleven segments.
    """
    names = segment.table.schema.names
    if fields is None or "$meta" in names:  # dynamic fields: Lite's own unpacking of `$meta`
        return dict(segment.row_to_dict(row))
    return {name: segment.table.column(name)[row].as_py() for name in names if name in fields}


def _projection(
    project_record_fn: Callable[[dict[str, Any]], dict[str, Any]] | None,
    output_fields: Sequence[str] | None,
    pk_field: str,
    vector_field: str,
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    if project_record_fn is not None:
        return project_record_fn
    if output_fields is None:
        hidden = {pk_field, vector_field}
        return lambda record: {k: v for k, v in record.items() if k not in hidden}
    keep = set(output_fields) - {pk_field}
    return lambda record: {k: record[k] for k in keep if k in record}


_PATCH = LitePatch(
    "milvus_lite.engine.collection",
    None,
    "execute_search_with_index",
    execute_search_with_index,
    CHECKED_VERSIONS,
    "its own search executor, so searches scan every stored row",
)


def in_use() -> bool:
    """Whether this executor answers Lite's searches in this process."""
    return _PATCH.installed


def install() -> bool:
    """Use this executor for Milvus Lite searches in this process; True if it is in use.

    Leaves the stock executor (and says so) on a Lite version this was not checked against.
    """
    return _PATCH.install()


def uninstall() -> None:
    """Put the stock executor back (tests compare the two)."""
    _PATCH.uninstall()
