"""The compaction worker (`recall/lite_compaction.py`) leaves the data as Milvus Lite's own does.

Each history runs twice, once under Lite's worker and once under the replacement, draining the
background thread after every flush so that both make the same compaction decisions. After every
step the two must agree on everything a reader sees: search answers (ids, distances, entities,
order), every live row with its vector, and, after each drain, the data files, the rows in each
segment and the tombstones left after GC. The live rows are also checked against a plain
dictionary model of the history. Other tests pin down what the replacement changes: a merge runs
without the lock searches take, and a merged segment is searched only once its index is built.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import milvus_lite
import numpy as np
import pytest
from lite_support import DIM, PARTITIONS, create_tagged_collection, lite_client
from milvus_lite.engine.collection import Collection
from pymilvus import MilvusClient

from feedbackloop.recall import lite_compaction, lite_query, lite_search
from feedbackloop.recall.index import FeedbackIndex

STOCK_WORKER = lite_compaction.stock_worker()


@pytest.fixture(autouse=True)
def _installed() -> Iterator[None]:
    assert lite_compaction.install() is True
    yield
    lite_compaction.install()  # the process-wide default the other tests expect


def _engine(path: Path) -> Any:
    col = lite_query.engine_collection(str(path), "c")
    assert col is not None
    return col


class History:
    """Random writes, deletes and flushes, mirrored in a dictionary of the rows that should be live."""

    def __init__(self, client: MilvusClient, col: Any, seed: int) -> None:
        self.client = client
        self.col = col
        self.rng = np.random.default_rng(seed)
        self.live: dict[str, tuple[str, int, list[float]]] = {}  # id -> (partition, tag, vector)

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.55:
            partition = str(self.rng.choice(PARTITIONS))
            ids = {f"k{int(i)}" for i in self.rng.integers(0, 300, size=12)}
            rows = [
                {"id": i, "vector": self.rng.normal(size=DIM).tolist(), "tag": int(self.rng.integers(0, 5))}
                for i in sorted(ids)
            ]
            self.client.upsert("c", rows, partition_name=partition)
            for row in rows:
                self.live[row["id"]] = (partition, row["tag"], row["vector"])
        elif roll < 0.7:
            gone = sorted({f"k{int(i)}" for i in self.rng.integers(0, 300, size=6)})
            self.client.delete("c", ids=gone)
            for i in gone:
                self.live.pop(i, None)
        else:
            self.client.flush("c")
            self.col._wait_for_bg()  # the same compaction decisions in both runs

    def search(self) -> list[dict[str, Any]]:
        hits = self.client.search(
            "c",
            data=[self.rng.normal(size=DIM).tolist()],
            anns_field="vector",
            filter=str(self.rng.choice(["", "tag >= 2"])),
            limit=int(self.rng.choice([5, 40])),
            output_fields=["tag"],
            partition_names=None if self.rng.random() < 0.5 else [str(self.rng.choice(PARTITIONS))],
            search_params={"metric_type": "COSINE", "params": {}},
            consistency_level="Strong",
        )
        return [dict(hit) for hit in hits[0]]

    def rows(self) -> dict[str, tuple[int, list[float]]]:
        rows = self.client.query("c", filter="", output_fields=["id", "tag", "vector"], limit=16_384)
        return {str(r["id"]): (int(r["tag"]), [float(x) for x in r["vector"]]) for r in rows}

    def layout(self) -> Any:
        """Data files, each segment's (key, seq) rows, and the tombstones: what compaction decides."""
        segments, deltas = self.col._read_snapshot()
        return (
            self.col._manifest.get_all_data_files(),
            sorted((seg.partition, sorted(zip(seg.pks, seg.seqs.tolist(), strict=True))) for seg in segments),
            sorted(deltas.snapshot.items()),
        )


def _run(path: Path, seed: int, steps: int) -> tuple[list[Any], int]:
    client = lite_client(path)
    create_tagged_collection(client, "FLAT")
    history = History(client, _engine(path), seed)
    observed: list[Any] = []
    compactions = 0
    try:
        for _ in range(steps):
            files_before = sum(len(f) for f in history.col._manifest.get_all_data_files().values())
            history.step()
            files_after = sum(len(f) for f in history.col._manifest.get_all_data_files().values())
            compactions += files_after < files_before
            rows = history.rows()
            assert rows.keys() == history.live.keys()
            for key, (tag, vector) in rows.items():
                assert tag == history.live[key][1]
                assert np.allclose(vector, history.live[key][2], atol=1e-6)
            observed.append((history.search(), rows, history.layout()))
    finally:
        client.close()
    return observed, compactions


@pytest.mark.parametrize("seed", [0, 1])
def test_random_histories_leave_what_lites_own_compaction_leaves(tmp_path: Path, seed: int) -> None:
    lite_compaction.uninstall()
    stock, stock_compactions = _run(tmp_path / "stock.db", seed, 120)
    assert lite_compaction.install() is True
    replaced, compactions = _run(tmp_path / "replaced.db", seed, 120)
    assert compactions == stock_compactions >= 3, "the histories compact, more than once"
    assert len(replaced) == len(stock)
    for step, (got, expected) in enumerate(zip(replaced, stock, strict=True)):
        assert got == expected, f"step {step}"


def _flush_segments(
    client: MilvusClient, col: Any, rng: np.random.Generator, count: int, rows: int, first: int = 0
) -> None:
    """`count` flushed segments of `rows` new keys each, `s<first>-0` onwards."""
    for n in range(first, first + count):
        batch = [
            {"id": f"s{n}-{i}", "vector": rng.normal(size=DIM).tolist(), "tag": i % 5} for i in range(rows)
        ]
        client.upsert("c", batch, partition_name="p1")
        client.flush("c")
        col._wait_for_bg()


def _three_flushed_segments(
    path: Path, index_type: str, seed: int, rows: int
) -> tuple[MilvusClient, Any, np.random.Generator]:
    """Collection "c" at `path`, its vectors under `index_type`, with three flushed segments of
    `rows` keys each in p1 (one short of a merge): the client, the engine's collection, and the
    generator the next segments' vectors come from."""
    client = lite_client(path)
    create_tagged_collection(client, index_type)
    col = _engine(path)
    rng = np.random.default_rng(seed)
    _flush_segments(client, col, rng, 3, rows)
    return client, col, rng


def test_searches_run_during_a_merge_and_never_see_an_unindexed_merged_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three indexed segments: one short of a merge.
    client, col, rng = _three_flushed_segments(tmp_path / "hnsw.db", "HNSW", seed=4, rows=50)
    seen: list[tuple[int, bool]] = []  # (rows, indexed) of each segment in each snapshot
    builds: list[int] = []
    real_build = Collection._build_or_load_segment_index

    def build(self: Any, segment: Any, spec: Any) -> None:
        if segment.num_rows > 50:  # the merged segment: look at what searches see meanwhile
            builds.append(segment.num_rows)
            reader = threading.Thread(target=lambda: seen.extend(_snapshot(self)))
            reader.start()
            reader.join(timeout=20)
            assert not reader.is_alive(), "a search waited for the merge"
            hits = _search_from_another_thread(client)
            assert len(hits) == 10
        real_build(self, segment, spec)

    monkeypatch.setattr(Collection, "_build_or_load_segment_index", build)
    _flush_segments(client, col, rng, 1, 50, first=3)  # the fourth: Lite merges the four
    assert builds == [200], "one merge of the four segments, indexed before the swap"
    # The four inputs, the three older ones indexed (the fourth waits for the build to end).
    assert sorted(seen) == [(50, False), (50, True), (50, True), (50, True)], seen
    segments, _ = col._read_snapshot()
    assert [(seg.num_rows, "vector" in seg.indexes) for seg in segments] == [(200, True)]
    # The replaced files and their index sidecars are gone; the merged segment's are there.
    partition_dir = Path(col._data_dir) / "partitions" / "p1"
    (merged,) = col._manifest.get_data_files("p1")
    assert sorted(p.name for p in (partition_dir / "data").iterdir()) == [Path(merged).name]
    sidecars = sorted(p.name for p in Path(col._index_dir("p1")).iterdir())
    assert sidecars and all(name.startswith(Path(merged).stem + ".") for name in sidecars), sidecars
    client.close()


def _snapshot(col: Any) -> list[tuple[int, bool]]:
    segments, _ = col._read_snapshot()
    return [(seg.num_rows, "vector" in seg.indexes) for seg in segments]


def _search_from_another_thread(client: MilvusClient) -> list[Any]:
    found: list[Any] = []

    def search() -> None:
        found.extend(client.search("c", data=[[1.0] * DIM], anns_field="vector", limit=10)[0])

    searcher = threading.Thread(target=search)
    searcher.start()
    searcher.join(timeout=20)
    assert not searcher.is_alive(), "a search waited for the merge"
    return found


def test_a_delete_during_a_merge_stays_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "race.db"
    client, col, rng = _three_flushed_segments(path, "FLAT", seed=6, rows=20)
    real_merge = lite_compaction._merge

    def merge_then_delete(*arguments: Any) -> Any:
        merged = real_merge(*arguments)  # tombstones were taken before this delete
        worker = threading.Thread(target=lambda: (client.delete("c", ids=["s0-3"]), client.flush("c")))
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "a write waited for the merge"
        return merged

    monkeypatch.setattr(lite_compaction, "_merge", merge_then_delete)
    _flush_segments(client, col, rng, 1, 20, first=3)
    col._wait_for_bg()
    segments, _ = col._read_snapshot()
    assert any(seg.num_rows == 80 and "s0-3" in seg.pks for seg in segments), "merged before the delete"
    ids = {str(r["id"]) for r in client.query("c", filter="", output_fields=["id"], limit=1000)}
    assert len(ids) == 79 and "s0-3" not in ids
    hits = client.search("c", data=[[1.0] * DIM], anns_field="vector", limit=100)[0]
    assert {str(h["id"]) for h in hits} == ids
    client.close()
    reopened = lite_client(path)  # and after a restart, from the files
    reopened.load_collection("c")
    assert {str(r["id"]) for r in reopened.query("c", filter="", output_fields=["id"], limit=1000)} == ids
    reopened.close()


def test_a_merge_whose_inputs_went_away_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert lite_search.install() is True  # so that the merge primes its set (a server installs both)
    client, col, rng = _three_flushed_segments(tmp_path / "dropped.db", "FLAT", seed=8, rows=20)
    real_merge = lite_compaction._merge
    written: list[str] = []

    def merge_then_drop(manager: Any, partition_dir: str, files: list[str], deltas: Any) -> Any:
        merged = real_merge(manager, partition_dir, files, deltas)
        written.extend(f"{partition_dir}/{rel}" for rel in merged[0])
        with col._maintenance_lock:  # as a partition drop would leave the manifest
            col._manifest.remove_data_files("p1", files)
            col._manifest.save()
        return merged

    monkeypatch.setattr(lite_compaction, "_merge", merge_then_drop)
    _flush_segments(client, col, rng, 1, 20, first=3)
    assert len(written) == 1
    assert not Path(written[0]).exists(), "the abandoned merge removed its file"
    assert col._manifest.get_data_files("p1") == []
    assert lite_search._cache._primed == {}, "nor is its segment set kept"
    client.close()


def test_the_set_a_merge_leaves_is_kept_before_any_search_asks(tmp_path: Path) -> None:
    """The live rows of the segment set after a swap are worked out before it (and taken up by
    the worker), so the first search after a merge does not walk every merged row."""
    assert lite_search.install() is True  # the executor that keeps them (a server installs both)
    client, col, rng = _three_flushed_segments(tmp_path / "primed.db", "HNSW", seed=9, rows=30)
    assert len(client.search("c", data=[[1.0] * DIM], anns_field="vector", limit=5)[0]) == 5
    before = lite_search.searched(col._read_snapshot()[0])
    assert lite_search._cache._entries.get(lite_search._key(before)) is not None
    _flush_segments(client, col, rng, 1, 30, first=3)  # the fourth: a merge
    after = lite_search.searched(col._read_snapshot()[0])
    assert [seg.num_rows for seg in after] == [120]
    kept = lite_search._cache._entries.get(lite_search._key(after))
    assert kept is not None, "no search has run since the merge, yet its set is kept"
    assert lite_search._cache._entries.get(lite_search._key(before)) is None  # replaced: dropped
    assert lite_search._cache._primed == {}
    assert [m.tolist() for m in kept.masks] == [[True] * 120]
    hits = client.search("c", data=[[1.0] * DIM], anns_field="vector", limit=10)[0]
    assert len(hits) == 10 and lite_search._cache._entries.get(lite_search._key(after)) is kept
    client.close()


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 3)])
def test_the_worker_leaves_a_core_to_searches(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    """Every core the process may run on but one, and one on a single core."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(10, 10 + cores)), raising=False)
    assert lite_compaction.background_threads() == threads


@pytest.mark.parametrize(("cpu_count", "threads"), [(4, 3), (1, 1), (None, 1)])
def test_without_an_affinity_the_worker_counts_the_cpus(
    monkeypatch: pytest.MonkeyPatch, cpu_count: int | None, threads: int
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cpu_count)
    assert lite_compaction.background_threads() == threads


def test_the_worker_sets_faiss_threads_for_itself_and_puts_them_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAISS builds the worker's indexes with `background_threads()` threads; other threads keep
    their own count, and the worker's thread gets its own back, even when the work fails."""
    import faiss

    default = faiss.omp_get_max_threads()
    cores = default + 2  # so that the worker's count (cores - 1) is neither the default nor its own
    own = default + 5
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    seen: list[dict[str, int]] = []
    fail = False

    def record(col: Any) -> None:
        counts = {"worker": faiss.omp_get_max_threads()}
        other = threading.Thread(target=lambda: counts.update(search=faiss.omp_get_max_threads()))
        other.start()
        other.join()
        seen.append(counts)
        if fail:
            raise RuntimeError("injected: the merge failed")

    monkeypatch.setattr(lite_compaction, "_compact_and_index", record)
    monkeypatch.setattr(lite_compaction, "_at_background_priority", lambda: None)  # not this thread's
    faiss.omp_set_num_threads(own)
    try:
        lite_compaction._bg_compact_and_index(object())
        assert faiss.omp_get_max_threads() == own, "put back after the work"
        fail = True
        lite_compaction._bg_compact_and_index(object())  # logs the failure, raises nothing
        assert faiss.omp_get_max_threads() == own, "put back after the work failed"
    finally:
        faiss.omp_set_num_threads(default)
    assert seen == [{"worker": cores - 1, "search": default}] * 2


def test_a_merge_that_fails_before_its_commit_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, col, rng = _three_flushed_segments(tmp_path / "failed.db", "FLAT", seed=10, rows=20)

    def fail(*arguments: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(lite_compaction, "_load_indexed", fail)
    _flush_segments(client, col, rng, 1, 20, first=3)  # the fourth: the merge fails after writing
    files = col._manifest.get_data_files("p1")
    assert len(files) == 4, "nothing committed"
    data_dir = Path(col._data_dir) / "partitions" / "p1" / "data"
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(Path(f).name for f in files)
    assert len(client.query("c", filter="", output_fields=["id"], limit=1000)) == 80
    client.close()


def test_install_swaps_the_worker_and_uninstall_restores_it() -> None:
    lite_compaction.uninstall()
    assert Collection._bg_compact_and_index is STOCK_WORKER
    assert lite_compaction.install() is True
    assert Collection._bg_compact_and_index is lite_compaction._bg_compact_and_index
    assert lite_compaction.install() is True  # idempotent
    lite_compaction.uninstall()
    assert Collection._bg_compact_and_index is STOCK_WORKER


def test_an_unchecked_lite_version_keeps_lites_own_compaction(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lite_compaction.uninstall()
    monkeypatch.setattr(milvus_lite, "__version__", "9.9.9")
    assert lite_compaction.install() is False
    assert Collection._bg_compact_and_index is STOCK_WORKER
    assert "milvus-lite 9.9.9: keeping its own compaction" in caplog.text


@pytest.mark.parametrize("enabled", [True, False])
def test_the_live_row_cache_setting_decides_the_worker(tmp_path: Path, enabled: bool) -> None:
    index = FeedbackIndex(str(tmp_path / "setting.db"), "s", lite_live_row_cache=enabled)
    try:
        expected = lite_compaction._bg_compact_and_index if enabled else STOCK_WORKER
        assert Collection._bg_compact_and_index is expected
    finally:
        index.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a niceness per thread is Linux's")
def test_the_worker_runs_at_background_priority_and_other_threads_keep_theirs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's thread is niced for good, from its first task on; the rest of the process is not."""
    monkeypatch.setattr(lite_compaction, "_compact_and_index", lambda col: None)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int] = {}

    def background_executor() -> None:
        lite_compaction._bg_compact_and_index(object())
        seen["after a task"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        lite_compaction._bg_compact_and_index(object())  # already there: unchanged, no error
        seen["after another"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    worker = threading.Thread(target=background_executor)
    worker.start()
    worker.join()
    assert seen == {"after a task": 19, "after another": 19}  # 19: the lowest priority
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_a_refused_priority_change_does_not_stop_the_merge(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sandbox may refuse setpriority (a fault only a mock can produce here): the work still runs,
    and the refusal is logged once, not on every task."""
    monkeypatch.setattr(lite_compaction, "_priority_refused", False)
    ran: list[object] = []
    monkeypatch.setattr(lite_compaction, "_compact_and_index", ran.append)

    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    monkeypatch.setattr(os, "getpriority", lambda which, who: 0)
    col = object()
    for _ in range(2):
        worker = threading.Thread(target=lite_compaction._bg_compact_and_index, args=(col,))
        worker.start()
        worker.join()
    assert ran == [col, col]
    refusals = [r for r in caplog.records if "setpriority refused" in r.getMessage()]
    assert len(refusals) == (1 if sys.platform.startswith("linux") else 0)
