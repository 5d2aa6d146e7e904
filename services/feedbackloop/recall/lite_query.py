"""Bulk reads from Milvus Lite straight from its engine: the rows a filter matches, with vectors.

Why: a TopIssues window is every feedback of a project in a time range, often tens of thousands
of rows with their vectors. Through pymilvus' `query_iterator`, Milvus Lite 3.2.2 answers each
page by walking every stored row of the collection in Python (which rows are live, then a record
dictionary per matching row), and each row then crosses gRPC as a list of floats and is decoded
field by field in pymilvus: 9 s for a window of 10,000 in a collection of 200,000, 99 s for one of
100,000 (README, Benchmarks). Milvus Lite runs in this process, so this module reads the same
rows from the engine's own arrays: the live rows of each segment set as `lite_search` keeps them
(the newest version of each key, tombstones and unflushed deletes applied), the filter evaluated
by Lite's own compiled expression over each segment's and the memtable's scalar columns (the
same code Lite's query runs, vectorized in Arrow for the filters recall writes), and the matching
rows' vectors taken from the segments' matrices in one step.

The answer is Lite's own: the same ids in the same order (ascending primary key, as its query
iterator pages) and the same vectors; `tests/unit/recall/test_lite_query.py` checks that on
random histories of inserts, upserts, deletes and flushes. `read()` answers None, and the caller
takes the stock path, where this was not checked: another Lite version, no engine of that path
in this process, a collection not loaded, or null vectors.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from feedbackloop.recall import lite_search

log = logging.getLogger(__name__)

_warned_lock = threading.Lock()
_warned: set[str] = set()


@dataclass(frozen=True)
class Rows:
    """Matching rows in ascending primary-key order: ids and one vector per row."""

    ids: list[Any]
    vectors: np.ndarray  # (len(ids), dim) float32


def supported() -> bool:
    """Whether the installed Lite is a version this reader was checked against."""
    import milvus_lite

    version = str(milvus_lite.__version__)
    if version in lite_search.CHECKED_VERSIONS:
        return True
    with _warned_lock:
        if version not in _warned:
            _warned.add(version)
            log.warning(
                "milvus-lite %s: bulk reads go through its query iterator (the direct reader was "
                "checked against %s); TopIssues then reads every stored row per page",
                version,
                ", ".join(sorted(lite_search.CHECKED_VERSIONS)),
            )
    return False


def engine_collection(uri: str, collection: str, db_name: str | None = None) -> Any | None:
    """The in-process Lite engine's open collection behind `uri` (a `.db` path), or None.

    pymilvus starts one Lite server per absolute path through Lite's server manager; the reader
    asks the same manager, so it reads the very engine that the client writes to. Only a
    collection the server has already opened is returned: opening one here would make a second
    engine over the same files.
    """
    from milvus_lite.db import DEFAULT_DATABASE_NAME
    from milvus_lite.server_manager import server_manager_instance

    entry = server_manager_instance._servers.get(os.path.abspath(uri))
    if entry is None:
        return None
    db = entry[1]
    database = db_name or DEFAULT_DATABASE_NAME
    if db.closed:
        return None
    name = db.resolve_collection_name(collection, database_name=database)
    return db._collections.get((database, name))


def read(col: Any, expr: str | None, vector_field: str) -> Rows | None:
    """Live rows of the Lite collection `col` matching `expr`, with their `vector_field` vectors.

    None where the stock path must answer (see the module docstring).
    """
    if col._load_state != "loaded":
        return None  # the stock path raises Lite's own "not loaded" error
    compiled = col._compile_filter(expr) if expr else None
    plan = col._indexed_filter_plan(compiled)
    segments, deltas = col._read_snapshot()
    memtable = col._memtable
    in_scope = tuple(seg for seg in segments if seg.num_rows > 0)

    mt_pks, mt_seqs, mt_vectors, _refs, mt_table, mt_units = lite_search.memtable_snapshot(
        memtable, vector_field, None, include_table=compiled is not None
    )
    if mt_pks and mt_units is None:
        return None  # null vectors in the memtable: Lite's own snapshot turned them into zeros

    masks, mt_live = lite_search.live_masks(in_scope, mt_pks, mt_seqs, deltas, memtable)

    from milvus_lite.search.filter import evaluate_mask
    from milvus_lite.search.indexed_filter import evaluate_segment_filter

    ids: list[Any] = []
    chunks: list[np.ndarray] = []
    for seg_index, seg in enumerate(in_scope):
        keep = masks.mask(seg_index)
        if compiled is not None:
            keep = keep & evaluate_segment_filter(seg, compiled, plan).astype(bool)
        rows = np.flatnonzero(keep)
        if not rows.size:
            continue
        vectors, valid = seg.vector_data(vector_field)
        if valid is not None and not valid[rows].all():
            return None  # a null vector: Lite's query answers None for it, not a row of zeros
        pks = seg.pks
        ids.extend(pks[row] for row in rows.tolist())
        chunks.append(vectors[rows])
    if mt_pks:
        if compiled is not None and mt_table is not None:
            mt_live &= evaluate_mask(compiled, mt_table).astype(bool)
        rows = np.flatnonzero(mt_live)
        if rows.size:
            ids.extend(mt_pks[row] for row in rows.tolist())
            chunks.append(mt_vectors[rows])
    if not ids:
        return Rows([], np.zeros((0, _dim(col, vector_field)), dtype=np.float32))
    order = _pk_order(ids)
    matrix = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    return Rows([ids[i] for i in order.tolist()], np.asarray(matrix[order], dtype=np.float32))


def _pk_order(ids: list[Any]) -> np.ndarray:
    """Positions of `ids` in ascending key order, as Lite's iterator sorts (Python ordering)."""
    if all(isinstance(pk, str) for pk in ids):
        # NumPy's unicode sort compares code points, as Python's str ordering does.
        return np.argsort(np.asarray(ids, dtype=np.str_), kind="stable")
    return np.asarray(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)


def _dim(col: Any, vector_field: str) -> int:
    for schema_field in col.schema.fields:
        if schema_field.name == vector_field:
            return int(schema_field.dim or 0)
    return 0
