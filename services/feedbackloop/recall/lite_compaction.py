"""Milvus Lite compaction that neither blocks searches nor leaves them without an index.

Why: Lite 3.2.2 merges a partition's small flushed segments on its background thread while it
holds the collection's `_maintenance_lock`, which every search takes (in `_read_snapshot`), and
only then builds the merged segment's vector indexes. Right after a bulk load of 100,000 rows
(README, Benchmarks) the last merge, 14 segments into one of 99,328 rows, held the lock for 4.4 s,
so a search that arrived then took 5.7 s; then for the 75 s its two HNSW indexes took to build,
every search brute-forced that segment (p50 115 to 300 ms, p99 up to 1.3 s, sharing the cores
with the build).

This worker makes the same merges with the same results, in another order: it reads, merges and
writes the new segment file outside the lock (the input files are immutable, and only this
background thread removes them, apart from a partition drop, see below), loads it and builds its
indexes, still outside the lock, while searches go on over the indexed segments it replaces; then,
under the lock, it commits the manifest and swaps the segments in one step, as Lite does.
Tombstones are taken as of the start (Lite's frozen copy); one that arrives during the merge stays
in the delta index and hides its row at search time, and tombstone GC, under the lock after the
swap, only drops tombstones older than every remaining segment, as in Lite. If the inputs are gone
by then (a partition dropped), or an error stops the merge before its commit, the new files are
removed and nothing is committed. A crash before the commit leaves an unreferenced data file and
index sidecars, which Lite's recovery already removes (its own crash before the manifest commit
leaves the same). One task merges for as long as there is something to merge before it indexes
the segments flushed meanwhile, which are few and small and searched by brute force until then:
indexing each of them first would be wasted on segments about to be merged.

The cost is memory: until the swap, the replaced segments and the merged one (with their
indexes) are both held. `tests/unit/recall/test_lite_compaction.py` runs random histories under
both workers and checks that searches, reads, data files, segments and tombstones are the same.
`install()` replaces the worker only on the Lite version this was checked against, and the
setting `milvus_lite_live_row_cache` (the switch for this project's Lite replacements) turns it
off.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from feedbackloop.recall import lite_search
from feedbackloop.recall.lite_patch import LitePatch

log = logging.getLogger(__name__)

CHECKED_VERSIONS = lite_search.CHECKED_VERSIONS
# Most compaction passes one background task makes before it indexes what is left unindexed. The
# passes stop as soon as one removes no file; the cap only bounds a task under nonstop ingest,
# where merging the flushed segments first is what saves work.
MAX_PASSES = 100
# The background thread's niceness (the lowest priority): searches, which wait on it, run first.
BACKGROUND_NICENESS = 19
_priority_refused = False


def _bg_compact_and_index(col: Any) -> None:
    """Drop-in for `milvus_lite.engine.collection.Collection._bg_compact_and_index` (3.2.2)."""
    try:
        _at_background_priority()
        with _a_core_left_for_searches():
            _compact_and_index(col)
    except Exception:
        log.exception("background compaction/index build failed; will retry on next flush")


def _compact_and_index(col: Any) -> None:
    # Segments flushed during a long index build would otherwise each get an index of their
    # own right before the next task merges them (at 100,000 rows that doubled the load time),
    # so merging goes on first, while it still reduces the number of files.
    for _ in range(MAX_PASSES):
        with col._maintenance_lock:
            partitions = list(col._manifest.list_partitions())
        if sum(_compact_partition(col, partition) for partition in partitions) <= 0:
            break
    started = time.monotonic()
    built = col._ensure_loaded_segments_indexed()  # segments flushed meanwhile
    if built > 0:
        log.info("bg: built %d segment indexes in %.2fs", built, time.monotonic() - started)


def _at_background_priority() -> None:
    """Run the calling thread (Lite's background executor, which does nothing else) at
    BACKGROUND_NICENESS from now on.

    Why: a merged segment's index build keeps a core busy for tens of seconds, and on the two
    cores here a search shares the other one with the gRPC threads, Lite's server thread and the
    clients. Right after a restart on 100,000 feedback, while Lite finished a merge of 49,824 rows,
    SearchSimilar by id over gRPC took p50 20 to 23 / p99 43 to 45 ms at the default priority and
    11 to 12 / 32 to 37 ms with this thread niced (README, Benchmarks). The price is that merges
    wait when searches keep every core busy. Linux applies a niceness per thread; it is not put
    back, as an unprivileged process may not lower it again.
    """
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < BACKGROUND_NICENESS:
            os.setpriority(os.PRIO_PROCESS, thread, BACKGROUND_NICENESS)
    except OSError as error:  # a sandbox refusing the call: the merge matters more than its priority
        global _priority_refused
        if not _priority_refused:  # once, not on every flush
            _priority_refused = True
            log.warning("Lite's background thread keeps its priority (setpriority refused: %s)", error)


def background_threads() -> int:
    """FAISS threads for this worker's index builds: every core this process may run on but one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


@contextmanager
def _a_core_left_for_searches() -> Iterator[None]:
    """Build this thread's indexes with `background_threads()` FAISS threads.

    Why: FAISS builds an HNSW index on every core by default, so on the two cores here searches
    during a merged segment's build waited for CPU (by-id p99 71 ms during the build, against 44 ms
    with one build thread, the same merge taking 64 s either way: README, Benchmarks). OpenMP keeps
    the thread count per calling thread, so searches (on Lite's server threads) keep every core.
    """
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(background_threads())
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _compact_partition(col: Any, partition: str) -> int:
    """One size-tiered compaction of `partition`, as Lite's `maybe_compact`.

    Returns how many fewer files the partition has for it (0 if none ran).
    """
    from milvus_lite.constants import COMPACTION_MIN_FILES_PER_BUCKET

    manager = col._compaction_mgr
    partition_dir = os.path.join(col._data_dir, "partitions", partition)
    with col._maintenance_lock:
        if partition not in col._manifest.list_partitions():
            return 0
        files = col._manifest.get_data_files(partition)
        if len(files) < COMPACTION_MIN_FILES_PER_BUCKET:
            return 0
        target = manager._select_target(
            manager._bucket_files(partition_dir, files), len(files), partition_dir
        )
        if target is None:
            return 0
        deltas = col._delta_index.frozen_copy()

    started = time.monotonic()
    log.info("compaction: partition=%s, merging %d files", partition, len(target))
    new_rels, input_rows, output_rows = _merge(manager, partition_dir, target, deltas)
    merge_seconds = time.monotonic() - started
    try:
        loaded = [_load_indexed(col, partition, partition_dir, rel) for rel in new_rels]
        segments = {rel: segment for rel, (segment, _) in zip(new_rels, loaded, strict=True)}
        primed = _prime_live_rows(col, partition, target, list(segments.values()))
    except BaseException:
        # Nothing refers to the new files yet: left behind, they would only be removed by the
        # recovery of the next start.
        _discard(col, partition, partition_dir, new_rels)
        raise

    try:
        with col._maintenance_lock:
            present = (
                set(col._manifest.get_data_files(partition))
                if partition in col._manifest.list_partitions()
                else set()
            )
            if not present.issuperset(target):
                _discard(col, partition, partition_dir, new_rels)
                log.info("compaction: partition=%s abandoned, its input files are gone", partition)
                return 0
            col._manifest.remove_data_files(partition, target)
            for rel in new_rels:
                col._manifest.add_data_file(partition, rel)
            col._manifest.save()
            if col._load_state != "loaded":
                for segment in segments.values():
                    segment.release_index()  # released meanwhile: as Lite's own release leaves segments
            for rel, segment in segments.items():
                col._segment_cache[(partition, rel)] = segment
            col._refresh_segment_cache()  # drops the replaced segments
            manager._gc_tombstones(col._manifest, col._delta_index)
            after = tuple(col._segment_cache.values()) if col._load_state == "loaded" else ()
        if primed and after:
            lite_search.adopt(after)  # extended from the primed set: only segments flushed since are walked
    finally:
        lite_search.drop_primed(primed)  # taken up by now, or of no use (abandoned, failed, released)
    # Unreferenced now, so deleted without the lock. Lite deletes them under it: with them, the
    # commit of an 11-file merge at 100,000 rows held the lock for about 0.2 s.
    _remove_replaced(col, partition, partition_dir, target)
    with col._maintenance_lock:
        col._cleanup_orphan_index_files()
    log.info(
        "compaction: partition=%s done in %.2fs (merge %.2fs, then load and index %.2fs, outside the "
        "lock) — %d input files (%d rows) → %d output files (%d rows, %d removed)",
        partition,
        time.monotonic() - started,
        merge_seconds,
        sum(seconds for _, seconds in loaded),
        len(target),
        input_rows,
        len(new_rels),
        output_rows,
        input_rows - output_rows,
    )
    return len(target) - len(new_rels)


def _prime_live_rows(col: Any, partition: str, target: list[str], merged: list[Any]) -> tuple[Any, ...]:
    """Work out the live rows of the segment set the swap will leave (searches keep them per set),
    so that the first search after the swap does not walk every row of the merged segment."""
    if col._load_state != "loaded":
        return ()
    with col._maintenance_lock:
        current = tuple(col._segment_cache.values())
        replaced = {id(col._segment_cache.get((partition, rel))) for rel in target}
    # As the swap orders them: the segments kept, then the merged ones. A flush before the swap
    # adds its segment between the two, and that set is then extended from this one.
    return lite_search.prime(tuple(seg for seg in current if id(seg) not in replaced) + tuple(merged))


def _merge(manager: Any, partition_dir: str, files: list[str], deltas: Any) -> tuple[list[str], int, int]:
    """Lite's `_compact_files` steps 1 to 4: read, dedup, drop deleted rows, write; no commit."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.compute as pc  # type: ignore[import-untyped]
    from milvus_lite.constants import MAX_SEGMENT_ROWS
    from milvus_lite.storage.data_file import read_data_file, write_data_file

    tables = [read_data_file(os.path.join(partition_dir, rel)) for rel in files]
    combined = pa.concat_tables(tables)
    merged = manager._filter_deleted(manager._dedup_max_seq(combined), deltas)
    new_rels: list[str] = []
    if merged.num_rows > 0:
        merged = merged.take(pc.sort_indices(merged, sort_keys=[("_seq", "ascending")]))
        total = merged.num_rows
        chunks = (
            [merged]
            if total <= MAX_SEGMENT_ROWS
            else [
                merged.slice(i, min(MAX_SEGMENT_ROWS, total - i)) for i in range(0, total, MAX_SEGMENT_ROWS)
            ]
        )
        try:
            for chunk in chunks:
                seqs = chunk.column("_seq").to_pylist()
                seq_min, seq_max = manager._pick_unique_seq_range(partition_dir, min(seqs), max(seqs))
                new_rels.append(write_data_file(chunk, partition_dir, seq_min=seq_min, seq_max=seq_max))
        except BaseException:
            for rel in new_rels:  # the chunks written before the failure
                _remove(os.path.join(partition_dir, rel))
            raise
    return new_rels, combined.num_rows, merged.num_rows


def _load_indexed(col: Any, partition: str, partition_dir: str, rel: str) -> tuple[Any, float]:
    """The new segment, with every index the collection's specs ask for built; and the seconds."""
    from milvus_lite.storage.segment import Segment

    started = time.monotonic()
    segment = Segment.load(
        file_path=os.path.join(partition_dir, rel),
        partition=partition,
        pk_field=col._pk_name,
        vector_field=col._vector_name,
    )
    if col._load_state == "loaded":
        for spec in tuple(col._index_specs.values()):
            col._build_or_load_segment_index(segment, spec)
    return segment, time.monotonic() - started


def _discard(col: Any, partition: str, partition_dir: str, new_rels: list[str]) -> None:
    """Remove an abandoned merge's files and index sidecars."""
    for path in [os.path.join(partition_dir, rel) for rel in new_rels] + _sidecars(col, partition, new_rels):
        _remove(path)


def _remove_replaced(col: Any, partition: str, partition_dir: str, files: list[str]) -> None:
    """Lite's step 6: delete the replaced files and their index sidecars unless a snapshot pins them."""
    from milvus_lite.storage.paths import persisted_rel_path
    from milvus_lite.storage.snapshots import snapshot_references

    data_refs, _delta_refs, index_refs = snapshot_references(col._data_dir)
    pinned_data, pinned_indexes = data_refs.get(partition, set()), index_refs.get(partition, set())
    for rel in files:
        if rel not in pinned_data:
            _remove(os.path.join(partition_dir, rel))
    for path in _sidecars(col, partition, files):
        if persisted_rel_path("indexes", os.path.basename(path)) not in pinned_indexes:
            _remove(path)


def _sidecars(col: Any, partition: str, rels: list[str]) -> list[str]:
    """Paths of the index sidecars built for the data files `rels`."""
    from milvus_lite.index.files import parse_index_sidecar_name

    stems = {os.path.splitext(os.path.basename(rel))[0] for rel in rels}
    index_dir = col._index_dir(partition)
    if not os.path.isdir(index_dir):
        return []
    return [
        os.path.join(index_dir, entry)
        for entry in os.listdir(index_dir)
        if (sidecar := parse_index_sidecar_name(entry)) is not None and sidecar.source_stem in stems
    ]


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("compaction: failed to remove %s: %s", path, error)


_PATCH = LitePatch(
    "milvus_lite.engine.collection",
    "Collection",
    "_bg_compact_and_index",
    _bg_compact_and_index,
    CHECKED_VERSIONS,
    "its own compaction, so searches wait for each merge and brute-force a merged segment until it is indexed",
)


def stock_worker() -> Callable[[Any], None]:
    """Lite's own worker, installed or not."""
    stock: Callable[[Any], None] = _PATCH.stock
    return stock


def install() -> bool:
    """Use this worker for Milvus Lite's background compaction in this process; True if in use."""
    return _PATCH.install()


def uninstall() -> None:
    """Put Lite's own worker back (tests compare the two)."""
    _PATCH.uninstall()
