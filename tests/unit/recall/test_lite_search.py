"""The live-row cache executor (`recall/lite_search.py`) answers exactly as Milvus Lite's own.

Every search in these tests runs through both executors with the same snapshot (segments,
memtable, tombstones), and the two answers must be equal: ids, distances, entities and order.
The histories mix inserts, upserts (also across partitions), deletes, flushes and searches with
and without filters and partitions; the answers are also checked against the live rows a plain
dictionary model of the history holds, so that two identical wrong answers would fail too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import milvus_lite
import numpy as np
import pytest
from lite_support import DIM, PARTITIONS, create_tagged_collection, lite_client
from milvus_lite.engine import collection as lite_collection
from milvus_lite.search import executor_indexed
from pymilvus import MilvusClient

from feedbackloop.recall import lite_search
from feedbackloop.recall.index import FeedbackIndex

Answer = list[list[dict[str, Any]]]


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Answer, Answer]]:
    """Route Lite's searches through both executors; each (stock, cached) answer pair is kept."""
    pairs: list[tuple[Answer, Answer]] = []

    def both(**arguments: Any) -> Answer:
        stock = executor_indexed.execute_search_with_index(**arguments)
        cached = lite_search.execute_search_with_index(**arguments)
        pairs.append((copy.deepcopy(stock), cached))  # Lite edits the answer it is given
        return stock

    monkeypatch.setattr(lite_collection, "execute_search_with_index", both)
    return pairs


class History:
    """Random writes to the collection, mirrored in a dictionary of the rows that should be live."""

    def __init__(self, client: MilvusClient, seed: int) -> None:
        self.client = client
        self.rng = np.random.default_rng(seed)
        # Few distinct directions, often repeated exactly, so that equal distances (ties) occur.
        self.directions = self.rng.normal(size=(6, DIM)).astype(np.float32)
        self.live: dict[str, tuple[str, int]] = {}  # id -> (partition, tag)

    def vector(self) -> list[float]:
        base = self.directions[self.rng.integers(len(self.directions))]
        if self.rng.random() < 0.5:
            base = base + self.rng.normal(scale=0.3, size=DIM).astype(np.float32)
        return [float(x) for x in base]

    def write(self) -> None:
        partition = str(self.rng.choice(PARTITIONS))
        ids = {f"k{int(i)}" for i in self.rng.integers(0, 40, size=5)}
        rows = [{"id": i, "vector": self.vector(), "tag": int(self.rng.integers(0, 5))} for i in ids]
        self.client.upsert("c", rows, partition_name=partition)
        for row in rows:
            self.live[row["id"]] = (partition, row["tag"])

    def delete(self) -> None:
        ids = sorted({f"k{int(i)}" for i in self.rng.integers(0, 40, size=3)})
        self.client.delete("c", ids=ids)
        for i in ids:
            self.live.pop(i, None)

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.6:
            self.write()
        elif roll < 0.85:
            self.delete()
        else:
            self.client.flush("c")

    def search(self) -> tuple[list[dict[str, Any]], str, list[str] | None, int]:
        expr = str(self.rng.choice(["", "tag >= 2", "tag in [0, 4]"]))
        partitions = None if self.rng.random() < 0.5 else [str(self.rng.choice(PARTITIONS))]
        limit = int(self.rng.choice([3, 10, 50]))
        hits = self.client.search(
            "c",
            data=[self.vector()],
            anns_field="vector",
            filter=expr,
            limit=limit,
            output_fields=[None, ["tag"], ["tag", "vector"], ["id"], ["*"]][int(self.rng.integers(5))],
            partition_names=partitions,
            search_params={"metric_type": "COSINE", "params": {}},
            consistency_level="Strong",
        )
        return list(hits[0]), expr, partitions, limit

    def passes(self, tag: int, expr: str) -> bool:
        return {"": True, "tag >= 2": tag >= 2, "tag in [0, 4]": tag in (0, 4)}[expr]


@pytest.fixture
def flat_client(tmp_path: Path) -> Iterator[MilvusClient]:
    client = lite_client(tmp_path / "flat.db")
    create_tagged_collection(client, "FLAT")
    yield client
    client.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_histories_answer_as_the_stock_executor(
    flat_client: MilvusClient, compared: list[tuple[Answer, Answer]], seed: int
) -> None:
    history = History(flat_client, seed)
    searches = 0
    hits_seen = 0
    for _ in range(60):
        history.step()
        hits, expr, partitions, limit = history.search()
        searches += 1
        hits_seen += len(hits)
        if partitions is None:
            # Across all partitions the answer comes from the live rows that pass the filter,
            # each once, as many as the limit allows.
            live = {i for i, (_, tag) in history.live.items() if history.passes(tag, expr)}
            returned = [str(hit["id"]) for hit in hits]
            assert set(returned) <= live
            assert len(returned) == len(set(returned)) == min(limit, len(live))
    assert len(compared) == searches
    for stock, cached in compared:
        assert cached == stock
    assert hits_seen > 100  # the histories are not trivially empty


def test_limit_covers_every_live_row_when_large_enough(
    flat_client: MilvusClient, compared: list[tuple[Answer, Answer]]
) -> None:
    history = History(flat_client, 7)
    for _ in range(40):
        history.step()
    hits = flat_client.search(
        "c", data=[history.vector()], anns_field="vector", limit=100, output_fields=["tag"]
    )[0]
    assert {str(h["id"]): int(h["entity"]["tag"]) for h in hits} == {
        i: tag for i, (_, tag) in history.live.items()
    }
    assert compared and all(cached == stock for stock, cached in compared)


def test_indexed_segments_with_unflushed_changes_answer_as_the_stock_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hnsw.db"
    client = lite_client(path)
    create_tagged_collection(client, "HNSW")
    history = History(client, 11)
    for _ in range(3):  # three sealed segments
        for _ in range(8):
            history.write()
        client.flush("c")
    client.close()  # drains Lite's background index build, so every segment has its index

    pairs: list[tuple[Answer, Answer]] = []
    indexed: list[bool] = []

    def both(**arguments: Any) -> Answer:
        segments = tuple(arguments["segments"])
        # Three flushes over two partitions: several sealed segments, each with its own index.
        indexed.append(len(segments) >= 3 and all(seg.indexes.get("vector") for seg in segments))
        arguments["segments"] = segments
        stock = executor_indexed.execute_search_with_index(**arguments)
        pairs.append((copy.deepcopy(stock), lite_search.execute_search_with_index(**arguments)))
        return stock

    monkeypatch.setattr(lite_collection, "execute_search_with_index", both)
    client = lite_client(path)
    client.load_collection("c")
    history.client = client
    try:
        for _ in range(20):  # memtable writes and deletes over indexed segments, never flushed
            if history.rng.random() < 0.6:
                history.write()
            else:
                history.delete()
            history.search()
    finally:
        client.close()
    assert len(pairs) == 20
    assert all(indexed), "the segments were searched through their HNSW index"
    assert all(cached == stock for stock, cached in pairs)


class Segment:
    """What the live-row cache reads of a Lite segment."""

    def __init__(self, pks: list[str], seqs: list[int]) -> None:
        self.pks = pks
        self.seqs = np.asarray(seqs, dtype=np.uint64)
        self.num_rows = len(pks)


def test_a_segment_set_marks_each_keys_newest_row() -> None:
    old, new = Segment(["a", "b"], [1, 2]), Segment(["a", "c"], [5, 3])
    live = lite_search._SegmentSetLiveRows((old, new))
    assert [m.tolist() for m in live.masks] == [[False, True], [True, True]]
    assert live.newest_seq == {"a": 5, "b": 2, "c": 3}


def test_a_set_extended_after_a_flush_equals_one_built_afresh() -> None:
    rng = np.random.default_rng(3)
    seq = iter(range(1, 10**6))
    segments = tuple(
        Segment([f"k{int(i)}" for i in keys], [next(seq) for _ in keys])
        for keys in (rng.choice(30, size=int(rng.integers(1, 20)), replace=False) for _ in range(8))
    )
    for cut in range(len(segments) + 1):
        base = lite_search._SegmentSetLiveRows(segments[:cut])
        base_masks = [m.copy() for m in base.masks]
        extended = lite_search._SegmentSetLiveRows(segments, base)
        fresh = lite_search._SegmentSetLiveRows(segments)
        assert [m.tolist() for m in extended.masks] == [m.tolist() for m in fresh.masks]
        assert (extended.newest_seq, extended.place) == (fresh.newest_seq, fresh.place)
        assert [m.tolist() for m in base.masks] == [m.tolist() for m in base_masks]  # base unchanged


def test_a_set_extended_from_a_subset_in_another_order_equals_one_built_afresh() -> None:
    rng = np.random.default_rng(4)
    seq = iter(range(1, 10**6))
    segments = tuple(
        Segment([f"k{int(i)}" for i in keys], [next(seq) for _ in keys])
        for keys in (rng.choice(30, size=int(rng.integers(1, 20)), replace=False) for _ in range(8))
    )
    for _ in range(20):
        order = tuple(segments[int(i)] for i in rng.permutation(len(segments)))
        subset = tuple(seg for seg in segments if rng.random() < 0.5)
        base = lite_search._SegmentSetLiveRows(subset)
        base_masks = [m.copy() for m in base.masks]
        extended = lite_search._SegmentSetLiveRows(order, base)
        fresh = lite_search._SegmentSetLiveRows(order)
        assert [m.tolist() for m in extended.masks] == [m.tolist() for m in fresh.masks]
        assert (extended.newest_seq, extended.place) == (fresh.newest_seq, fresh.place)
        assert [m.tolist() for m in base.masks] == [m.tolist() for m in base_masks]  # base unchanged


class CountedSegment(Segment):
    """A segment that records each walk over its keys."""

    walks: list[CountedSegment] = []

    @property  # type: ignore[override]
    def pks(self) -> list[str]:
        CountedSegment.walks.append(self)
        return self._pks

    @pks.setter
    def pks(self, value: list[str]) -> None:
        self._pks = value


def test_a_primed_set_is_taken_up_walking_only_what_a_flush_added() -> None:
    cache = lite_search._LiveRowCache(capacity=2)
    kept, first, second = (
        CountedSegment(["a", "b"], [1, 2]),
        CountedSegment(["c"], [3]),
        CountedSegment(["a"], [4]),
    )
    merged = CountedSegment(["c", "a"], [3, 4])  # first and second, merged
    searched_now = cache.get((kept, first, second))
    cache.prime((kept, merged))
    assert cache.get((kept, first, second)) is searched_now, "priming leaves the set in use"
    flushed = CountedSegment(["b"], [7])  # flushed before the swap: after the merged one's rows
    CountedSegment.walks.clear()
    after = cache.get((kept, flushed, merged))
    assert CountedSegment.walks == [flushed]
    fresh = lite_search._SegmentSetLiveRows((kept, flushed, merged))
    assert (
        [m.tolist() for m in after.masks]
        == [m.tolist() for m in fresh.masks]
        == [[False, False], [True], [True, True]]
    )
    assert cache._primed == {} and list(cache._entries) == [lite_search._key((kept, flushed, merged))]


def test_a_primed_set_that_will_not_come_is_dropped() -> None:
    cache = lite_search._LiveRowCache(capacity=2)
    merged = Segment(["a"], [1])
    cache.prime((merged,))
    cache.drop_primed((merged,))
    assert cache._primed == {}


def test_the_cache_extends_the_set_a_flush_grew() -> None:
    cache = lite_search._LiveRowCache(capacity=2)
    first, flushed = Segment(["a", "b"], [1, 2]), Segment(["a"], [3])
    cache.get((first,))
    grown = cache.get((first, flushed))
    assert [m.tolist() for m in grown.masks] == [[False, True], [True]]


def test_the_cache_drops_sets_whose_segments_were_replaced() -> None:
    cache = lite_search._LiveRowCache(capacity=2)
    first, second, merged = Segment(["a"], [1]), Segment(["b"], [2]), Segment(["a", "b"], [1, 2])
    before_flush = cache.get((first,))
    assert cache.get((first,)) is before_flush  # kept between searches
    cache.get((first, second))  # a flush added a segment: the older set may still be asked for
    assert cache.get((first,)) is before_flush
    cache.get((merged,))  # a compaction replaced both: neither older set is kept
    assert list(cache._entries) == [(id(merged),)]


def test_install_swaps_the_executor_and_uninstall_restores_it() -> None:
    lite_search.uninstall()
    stock = lite_collection.execute_search_with_index
    assert stock is executor_indexed.execute_search_with_index
    try:
        assert lite_search.install() is True
        assert lite_collection.execute_search_with_index is lite_search.execute_search_with_index
        assert lite_search.install() is True  # idempotent
        lite_search.uninstall()
        assert lite_collection.execute_search_with_index is stock
    finally:
        lite_search.install()


def test_an_unchecked_lite_version_keeps_the_stock_executor(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lite_search.uninstall()
    monkeypatch.setattr(milvus_lite, "__version__", "9.9.9")
    try:
        assert lite_search.install() is False
        assert lite_collection.execute_search_with_index is executor_indexed.execute_search_with_index
        assert "milvus-lite 9.9.9: keeping its own search executor" in caplog.text
    finally:
        monkeypatch.undo()
        lite_search.install()


@pytest.mark.parametrize(("enabled", "expected"), [(True, "cached"), (False, "stock")])
def test_the_setting_decides_which_executor_a_lite_index_uses(
    tmp_path: Path, enabled: bool, expected: str
) -> None:
    index = FeedbackIndex(str(tmp_path / "setting.db"), "s", lite_live_row_cache=enabled)
    try:
        in_use: Callable[..., Answer] = lite_collection.execute_search_with_index
        executors = {
            "cached": lite_search.execute_search_with_index,
            "stock": executor_indexed.execute_search_with_index,
        }
        assert in_use is executors[expected]
    finally:
        index.close()
        lite_search.install()
