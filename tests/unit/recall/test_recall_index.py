"""FeedbackIndex contract: the same tests run on Milvus Lite here and on a real Milvus server from
tests/integration/test_milvus_server.py (which imports them with a server-backed `index` fixture).
Vectors are small synthetic unit vectors, so these tests need no model."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feedbackloop.recall import index as index_module
from feedbackloop.recall.filters import FilterError, RecallFilter
from feedbackloop.recall.index import FeedbackIndex, IndexRow, rrf_merge

DIM = 8
T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)


def unit(*xs: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def row(i: int, project: str = "p1", **kw: object) -> IndexRow:
    rng = np.random.default_rng(i)
    vec = kw.pop("vector", None)
    if vec is None:
        vec = rng.normal(size=DIM).astype(np.float32)
        vec /= np.linalg.norm(vec)
    fields: dict[str, object] = {
        "signals": ("thumbs_down",),
        "categories": (),
        "model_version": "m1",
        "prompt_name": "support",
        "user_role": "customer",
        "source": "web",
        "occurred_at": T0 + i * 1000,
        "negative": True,
    }
    fields.update(kw)
    return IndexRow(id=f"fb_{i:04d}", project_id=project, vector=vec, **fields)  # type: ignore[arg-type]


@pytest.fixture
def filled(index: FeedbackIndex) -> FeedbackIndex:
    index.ensure_collection(DIM)
    rows = [
        row(0, vector=unit(1, 0), signals=("thumbs_down", "comment"), categories=("wrong_tone",)),
        row(1, vector=unit(1, 0.1), signals=("thumbs_up",), negative=False, model_version="m2"),
        row(2, vector=unit(1, 0.2), categories=("pricing", "outdated"), prompt_name="sales"),
        row(3, vector=unit(1, 0.3), user_role="admin", source="api"),
        row(4, vector=unit(0, 1), signals=("regenerate",), occurred_at=T0 + 3_600_000),
        row(5, vector=unit(0, 0, 1), signals=("edit",), negative=False),
    ]
    assert index.upsert(rows) == len(rows)
    return index


def ids(hits: list[tuple[str, float]]) -> list[str]:
    return [h[0] for h in hits]


def test_creating_the_collection_logs_no_error(
    index: FeedbackIndex, caplog: pytest.LogCaptureFixture
) -> None:
    pymilvus_log = logging.getLogger("pymilvus")  # it does not propagate to the root logger
    pymilvus_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.ERROR):
            index.ensure_collection(DIM)
            index.upsert([row(0)])
            hits = index.search("p1", row(0).vector, top_k=1)
    finally:
        pymilvus_log.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert ids(hits) == ["fb_0000"]


def test_round_trip_is_searchable_at_once_and_ordered(filled: FeedbackIndex) -> None:
    hits = filled.search("p1", unit(1, 0), top_k=3)
    assert ids(hits) == ["fb_0000", "fb_0001", "fb_0002"]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-4)
    assert hits[0][1] >= hits[1][1] >= hits[2][1]
    assert filled.count("p1") == 6


def test_upsert_replaces_by_id(filled: FeedbackIndex) -> None:
    filled.upsert([row(0, vector=unit(0, 0, 0, 1), signals=("copy",))])
    assert filled.count("p1") == 6
    assert ids(filled.search("p1", unit(0, 0, 0, 1), top_k=1)) == ["fb_0000"]
    assert ids(filled.search("p1", unit(1, 0), top_k=6, filter=RecallFilter(signals=["copy"]))) == ["fb_0000"]
    assert "fb_0000" not in ids(filled.search("p1", unit(1, 0), 6, filter=RecallFilter(signals=["comment"])))


@pytest.mark.parametrize(
    ("recall_filter", "expected"),
    [
        (RecallFilter(signals=["thumbs_up"]), {"fb_0001"}),
        (RecallFilter(signals=["regenerate", "edit"]), {"fb_0004", "fb_0005"}),
        (RecallFilter(categories=["outdated"]), {"fb_0002"}),
        (RecallFilter(categories=["wrong_tone", "pricing"]), {"fb_0000", "fb_0002"}),
        (RecallFilter(model_versions=["m2"]), {"fb_0001"}),
        (RecallFilter(prompt_names=["sales"]), {"fb_0002"}),
        (RecallFilter(user_roles=["admin"]), {"fb_0003"}),
        (RecallFilter(sources=["api"]), {"fb_0003"}),
        (RecallFilter(occurred_after=T0 + 3_600_000), {"fb_0004"}),
        (RecallFilter(occurred_before=T0 + 1000), {"fb_0000"}),
        (
            RecallFilter(
                occurred_after=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
                occurred_before=datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC),
            ),
            {"fb_0001", "fb_0002"},
        ),
        (RecallFilter(negative_only=True), {"fb_0000", "fb_0002", "fb_0003", "fb_0004"}),
        (
            RecallFilter(signals=["thumbs_down"], model_versions=["m1"], sources=["web"]),
            {"fb_0000", "fb_0002"},
        ),
        (RecallFilter(signals=["no_such_signal"]), set()),
    ],
)
def test_each_filter_field(filled: FeedbackIndex, recall_filter: RecallFilter, expected: set[str]) -> None:
    assert set(ids(filled.search("p1", unit(1, 0), top_k=10, filter=recall_filter))) == expected
    assert set(filled.query_ids("p1", recall_filter)) == expected
    assert filled.count("p1", recall_filter) == len(expected)


def test_min_score_drops_weak_hits(filled: FeedbackIndex) -> None:
    scores = dict(filled.search("p1", unit(1, 0), top_k=10))
    hits = filled.search("p1", unit(1, 0), top_k=10, min_score=0.97)
    assert hits and all(score >= 0.97 for _, score in hits)
    assert set(ids(hits)) == {i for i, s in scores.items() if s >= 0.97}
    assert "fb_0004" not in ids(hits)  # orthogonal: cosine 0


def test_exclude_ids(filled: FeedbackIndex) -> None:
    assert ids(filled.search("p1", unit(1, 0), 2, exclude_ids=["fb_0000"])) == ["fb_0001", "fb_0002"]


@pytest.mark.parametrize("exclude", [["fb_0000"], ["fb_0000", "fb_0002", "missing"], ["fb_0005"]])
@pytest.mark.parametrize("top_k", [1, 2, 5])
def test_a_few_excluded_ids_leave_the_answer_after_the_search(
    filled: FeedbackIndex, monkeypatch: pytest.MonkeyPatch, exclude: list[str], top_k: int
) -> None:
    """A handful of excluded ids are dropped from a longer answer, not filtered in Milvus (Lite
    evaluates `id in [...]` on every row): the same hits as the filter, and top_k of them."""
    filters: list[str] = []
    search = filled._client.search

    def spy(*arguments: Any, **options: Any) -> Any:
        filters.append(options["filter"])
        return search(*arguments, **options)

    monkeypatch.setattr(filled._client, "search", spy)
    after = filled.search("p1", unit(1, 0), top_k, exclude_ids=exclude)
    assert not any("(id in " in f for f in filters), filters
    monkeypatch.setattr(index_module, "EXCLUDED_AFTER_SEARCH", 0)
    filtered = filled.search("p1", unit(1, 0), top_k, exclude_ids=exclude)
    assert "(id in " in filters[-1]
    assert after == filtered
    assert len(after) == min(top_k, 6 - len({"fb_0000", "fb_0002", "fb_0005"} & set(exclude)))


ADVERSARIAL = [
    'p1" or project_id != "',
    "p1' or project_id != '",
    'x" or true or "',
    "p1\\",
    '\\" or 1==1 or \\"',
    "p1) or (true",
    "%",
    "_",
    "p1\n",
]


@pytest.mark.parametrize("evil", ADVERSARIAL)
def test_tenancy_with_adversarial_values(filled: FeedbackIndex, evil: str) -> None:
    filled.upsert([row(100, project="p2", vector=unit(1, 0), categories=(evil,), source=evil)])
    # Project B's row is the best match for the query, yet project A never sees it...
    for f in (None, RecallFilter(categories=[evil]), RecallFilter(sources=[evil, "web"])):
        assert "fb_0100" not in ids(filled.search("p1", unit(1, 0), top_k=10, filter=f))
        assert "fb_0100" not in filled.query_ids("p1", f)
    assert "fb_0100" not in filled.fetch_vectors("p1", ["fb_0100"])
    # ...not even through a project id that tries to close the quote.
    assert filled.search(evil, unit(1, 0), top_k=10) == []
    assert filled.count(evil) == 0
    # And the escaped value still matches itself exactly, inside its own project.
    assert ids(filled.search("p2", unit(1, 0), 10, filter=RecallFilter(categories=[evil]))) == ["fb_0100"]
    assert ids(filled.search("p2", unit(1, 0), 10, filter=RecallFilter(sources=[evil]))) == ["fb_0100"]
    assert filled.count("p2") == 1


def test_control_characters_are_refused(filled: FeedbackIndex) -> None:
    with pytest.raises(FilterError):
        filled.search("p1", unit(1, 0), 5, filter=RecallFilter(sources=["a\x00b"]))
    with pytest.raises(FilterError):
        filled.search("", unit(1, 0), 5)


def test_both_fields_of_a_feedback_come_in_one_read(
    filled: FeedbackIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    filled.upsert([row(9, vector=unit(1, 0), question_vector=unit(0, 1), has_question=True)])
    reads: list[str] = []
    get = filled._client.get
    monkeypatch.setattr(filled._client, "get", lambda name, **o: (reads.append(name), get(name, **o))[1])
    got = filled.fetch_fields("p1", ["fb_0009", "fb_0004", "missing"])
    assert len(reads) == (1 if filled.layout == "multi" else 2)
    assert set(got["feedback"]) == set(got["question"]) == {"fb_0009", "fb_0004"}
    np.testing.assert_allclose(got["feedback"]["fb_0009"], unit(1, 0), atol=1e-6)
    np.testing.assert_allclose(got["question"]["fb_0009"], unit(0, 1), atol=1e-6)
    assert filled.fetch_fields("p2", ["fb_0009"]) == {"feedback": {}, "question": {}}  # another tenant's


def test_fetch_vectors_and_iterate_window(filled: FeedbackIndex) -> None:
    got = filled.fetch_vectors("p1", ["fb_0000", "fb_0004", "missing"])
    assert set(got) == {"fb_0000", "fb_0004"}
    np.testing.assert_allclose(got["fb_0004"], unit(0, 1), atol=1e-6)
    window = RecallFilter(negative_only=True).within(T0, T0 + 10_000)
    assert sorted(i for i, _ in filled.iter_vectors("p1", window, page_size=2)) == [
        "fb_0000",
        "fb_0002",
        "fb_0003",
    ]


def test_iterate_past_one_page(index: FeedbackIndex) -> None:
    index.ensure_collection(DIM)
    index.upsert([row(i) for i in range(250)])
    seen = [i for i, _ in index.iter_vectors("p1", page_size=64)]
    assert len(seen) == len(set(seen)) == 250


def test_drop_and_reupsert_gives_identical_results(filled: FeedbackIndex) -> None:
    queries = [unit(1, 0), unit(0, 1), unit(1, 1, 1)]
    before = [filled.search("p1", q, top_k=4) for q in queries]
    rows = [filled.fetch_vectors("p1", [f"fb_{i:04d}"]) for i in range(6)]
    assert all(rows)
    filled.drop()
    with pytest.raises(RuntimeError):
        filled.search("p1", queries[0], 4)
    # Rebuild from the same source rows (SQL, in production).
    filled.ensure_collection(DIM)
    filled.upsert(
        [
            row(0, vector=unit(1, 0), signals=("thumbs_down", "comment"), categories=("wrong_tone",)),
            row(1, vector=unit(1, 0.1), signals=("thumbs_up",), negative=False, model_version="m2"),
            row(2, vector=unit(1, 0.2), categories=("pricing", "outdated"), prompt_name="sales"),
            row(3, vector=unit(1, 0.3), user_role="admin", source="api"),
            row(4, vector=unit(0, 1), signals=("regenerate",), occurred_at=T0 + 3_600_000),
            row(5, vector=unit(0, 0, 1), signals=("edit",), negative=False),
        ]
    )
    after = [filled.search("p1", q, top_k=4) for q in queries]
    assert [ids(h) for h in after] == [ids(h) for h in before]
    for a, b in zip(after, before, strict=True):
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


def test_counts_per_project_follow_upserts_deletes_and_a_drop(filled: FeedbackIndex) -> None:
    # What the index drift check relies on (recall/drift.py), on Lite and on a server.
    filled.upsert([row(10, project="p2"), row(11, project="p2"), row(0)])  # fb_0000 replaced, not added
    assert (filled.project_count("p1"), filled.project_count("p2"), filled.project_count("p3")) == (6, 2, 0)
    # Lite knows its live rows without a scan; a server's statistics would still count deletes.
    assert filled.total_count() == (8 if filled.is_lite else None)
    filled.delete("p1", ["fb_0001", "fb_0002"])
    assert filled.project_count("p1") == 4
    assert filled.total_count() == (6 if filled.is_lite else None)
    filled.drop()
    assert not filled.exists()
    assert filled.project_count("p1") == 0


@pytest.fixture
def two_fields(index: FeedbackIndex) -> FeedbackIndex:
    """Rows whose feedback and question vectors point different ways (fb_0003 has no question)."""
    index.ensure_collection(DIM)
    index.upsert(
        [
            row(0, vector=unit(1, 0), question_vector=unit(0, 0, 1), has_question=True),
            row(1, vector=unit(1, 0.3), question_vector=unit(0, 0, 0, 1), has_question=True),
            row(2, vector=unit(0, 1), question_vector=unit(0, 0, 1, 0.2), has_question=True),
            row(3, vector=unit(0, 0, 1)),  # session-level: its question vector is its feedback vector
        ]
    )
    return index


def test_each_field_is_searched_on_its_own(two_fields: FeedbackIndex) -> None:
    assert two_fields.layout == ("multi" if two_fields._multi_vector else "split")
    assert ids(two_fields.search("p1", unit(1, 0), top_k=2)) == ["fb_0000", "fb_0001"]
    # The question side ranks by question; rows without a question are left out of it.
    assert ids(two_fields.search("p1", unit(0, 0, 1), top_k=4, field="question")) == [
        "fb_0000",
        "fb_0002",
        "fb_0001",
    ]
    assert ids(two_fields.search("p1", unit(0, 0, 1), top_k=1)) == ["fb_0003"]
    got = two_fields.fetch_vectors("p1", ["fb_0000", "fb_0003"], "question")
    np.testing.assert_allclose(got["fb_0000"], unit(0, 0, 1), atol=1e-6)
    np.testing.assert_allclose(got["fb_0003"], unit(0, 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="unknown field"):
        two_fields.search("p1", unit(1, 0), top_k=1, field="answer")


def test_both_fields_fuse_by_reciprocal_rank(two_fields: FeedbackIndex) -> None:
    vectors = {"feedback": unit(1, 0), "question": unit(0, 0, 1)}
    fused = two_fields.search_both("p1", vectors, top_k=4)
    # The same formula over the two single-field rankings (what a 2.3 server gets here).
    ranked = [ids(two_fields.search("p1", vectors[f], top_k=20, field=f)) for f in ("feedback", "question")]
    assert [(h.id, round(h.score, 6)) for h in fused] == [(i, round(s, 6)) for i, s in rrf_merge(ranked, 4)]
    assert fused[0].id == "fb_0000"  # first on both fields
    assert fused[0].field_scores == pytest.approx({"feedback": 1.0, "question": 1.0}, abs=1e-5)
    # min_score keeps a hit whose better field reaches it.
    kept = two_fields.search_both("p1", vectors, top_k=4, min_score=0.9)
    assert {h.id for h in kept} == {h.id for h in fused if max(h.field_scores.values()) >= 0.9}
    assert two_fields.search_both("p1", vectors, top_k=4, exclude_ids=["fb_0000"])[0].id != "fb_0000"


def test_a_collection_of_the_one_vector_layout_is_read_and_rebuilt(index: FeedbackIndex) -> None:
    """A collection an earlier version created (one `vector`, no question field) keeps working,
    question searches on its one vector, until drop and rebuild give the current layout."""
    from pymilvus import DataType, MilvusClient

    client = index._client
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("project_id", DataType.VARCHAR, max_length=128, is_partition_key=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    for name in ("signals", "categories"):
        schema.add_field(name, DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=64, max_length=256)
    for name in ("signals_text", "categories_text"):
        schema.add_field(name, DataType.VARCHAR, max_length=65_535)
    for name in ("model_version", "prompt_name", "user_role", "source"):
        schema.add_field(name, DataType.VARCHAR, max_length=256)
    schema.add_field("occurred_at", DataType.INT64)
    schema.add_field("negative", DataType.BOOL)
    params = client.prepare_index_params()
    params.add_index(
        field_name="vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 200}
    )
    client.create_collection(index.collection, schema=schema, consistency_level="Strong")
    client.create_index(index.collection, params, sync=False)
    client.load_collection(index.collection)
    reopened = FeedbackIndex(index.uri, index.collection)
    try:
        reopened.ensure_collection(DIM)
        assert reopened.layout == "legacy"
        reopened.upsert([row(0, vector=unit(1, 0), question_vector=unit(0, 1), has_question=True)])
        assert ids(reopened.search("p1", unit(1, 0), top_k=1, field="question")) == ["fb_0000"]
        both = reopened.fetch_fields("p1", ["fb_0000"])  # one vector answers for both fields
        np.testing.assert_allclose(both["feedback"]["fb_0000"], unit(1, 0), atol=1e-6)
        np.testing.assert_allclose(both["question"]["fb_0000"], unit(1, 0), atol=1e-6)
        assert reopened.holds_only("p1") and not reopened.holds_only("p2")
        reopened.drop()
        reopened.ensure_collection(DIM)
        assert reopened.layout in ("multi", "split")
    finally:
        reopened.close()


def test_lite_flushes_every_so_many_written_rows(lite_uri_for_flush: str) -> None:
    """Lite searches unflushed rows one by one and flushes only at 128 MiB on its own: a server
    that had just ingested a few thousand feedback searched them that way until a restart."""
    flushing = FeedbackIndex(lite_uri_for_flush, "flushed", lite_flush_rows=10)
    never = FeedbackIndex(lite_uri_for_flush, "unflushed", lite_flush_rows=0)
    try:
        for index in (flushing, never):
            index.ensure_collection(DIM)
            for lo in range(0, 25, 5):
                index.upsert([row(i) for i in range(lo, lo + 5)])
        segments = {
            name: sorted(Path(lite_uri_for_flush, "collections", name).glob("partitions/*/data/*.parquet"))
            for name in ("flushed", "unflushed")
        }
        assert len(segments["flushed"]) == 2 and segments["unflushed"] == []
        assert ids(flushing.search("p1", row(3).vector, top_k=1)) == ["fb_0003"]
    finally:
        flushing.close()
        never.close()


@pytest.fixture
def lite_uri_for_flush(tmp_path: Path) -> str:
    return str(tmp_path / "flush.db")


def test_dimension_mismatch_is_refused(filled: FeedbackIndex) -> None:
    with pytest.raises(ValueError, match="8-dimensional vectors, the model gives 16"):
        filled.ensure_collection(DIM * 2)
    with pytest.raises(ValueError, match="dimensions"):
        filled.search("p1", np.ones(DIM * 2, dtype=np.float32), 3)


IDLE_CLIENT = """
import sys, time
from feedbackloop.recall.index import FeedbackIndex, IndexRow
index = FeedbackIndex(sys.argv[1], "idle")
index.ensure_collection(4)
index.upsert([IndexRow(id="a", project_id="p", vector=[0.5, 0.5, 0.5, 0.5])])
time.sleep(50)
print([hit[0] for hit in index.search("p", [0.5, 0.5, 0.5, 0.5], 1)])
"""


def test_an_idle_lite_channel_is_not_sent_away(tmp_path: Path) -> None:
    """pymilvus' default idle pings made Lite's in-process server answer GOAWAY "too_many_pings"
    after about 30 s, which gRPC logged as an error on every quiet spell of a running server.
    Its own process, because gRPC's C core writes that log past pytest's capture."""
    child = subprocess.run(
        [sys.executable, "-c", IDLE_CLIENT, str(tmp_path / "idle.db")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "['a']"
    assert "too_many_pings" not in child.stderr


def test_a_collection_dropped_during_the_drift_count_counts_as_empty(
    filled: FeedbackIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drift monitor checks that the collection exists, then counts it; a drop in between
    (here made to happen at that moment, which only a wrapper can time) reads as 0 held, not as
    a count that could not be made."""
    from feedbackloop.recall import drift

    counted = filled.total_count

    def dropped_first() -> int | None:
        filled.drop()
        return counted()

    monkeypatch.setattr(filled, "total_count", dropped_first)
    assert drift._indexed_counts(filled, {"p1": 4}, ["p1"]) == {"p1": 0}


def test_a_count_failing_on_a_collection_that_exists_is_still_an_error(
    filled: FeedbackIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedbackloop.recall import drift

    def unreachable() -> int | None:
        raise ConnectionError("Milvus went away")

    monkeypatch.setattr(filled, "total_count", unreachable)
    with pytest.raises(ConnectionError):
        drift._indexed_counts(filled, {"p1": 4}, ["p1"])
