"""Recall benchmark: embedding throughput, and filtered top-10 search latency/recall in Milvus Lite.

(a) bare `SentenceTransformer.encode` throughput, batch size 64, over ~2,000 feedback-like texts;
(b) 100,000 stored 384-d vectors (the model's dimension) in Milvus Lite with the production
    schema and index (`FeedbackIndex`), top-10 searches with one metadata filter
    (`signals` contains "thumbs_down", ~40% of rows) through `FeedbackIndex.search`, timed per
    query (p50/p99), and recall@10 against exact NumPy search over the same filtered rows.
    Searched twice: straight after the bulk load, while Lite still builds its index in the
    background (`indexing_*`), and in a fresh process once every segment is indexed (`search_*`,
    the steady state of a running server).

The stored vectors are synthetic: unit vectors drawn around 2,000 random centres (real feedback
embeddings are clustered like this; uniformly random 384-d vectors are all near-orthogonal and
make nearest neighbours meaningless). Queries are fresh draws from the same distribution.

`run(quick=True)` shrinks everything (for smoke tests); the figures are only meaningful in full.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DIM = 384
TOPK = 10
SIGNALS = ("thumbs_down", "thumbs_up", "regenerate", "comment", "edit")
SIGNAL_P = (0.4, 0.3, 0.1, 0.15, 0.05)


def _texts(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    subjects = ["the pricing table", "the API example", "the summary", "your answer", "the SQL query"]
    faults = ["is outdated", "is wrong", "was rude", "is far too long", "made up a function", "timed out"]
    extras = ["again", "for the third time", "on the enterprise plan", "in German", "since yesterday", ""]
    return [
        f"{rng.choice(subjects)} {rng.choice(faults)} {rng.choice(extras)} (case {i})".strip()
        for i in range(n)
    ]


def bench_encode(n_texts: int) -> dict[str, float]:
    from feedbackloop.recall.embedder import Embedder

    embedder = Embedder().load()
    model: Any = embedder._model  # bare model.encode, as the brief asks: no wrapper overhead
    texts = _texts(n_texts)
    model.encode(texts[:64], batch_size=64)  # warm-up: first call pays allocator/thread start-up
    start = time.perf_counter()
    model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    elapsed = time.perf_counter() - start
    return {
        "encode_texts": float(n_texts),
        "encode_seconds": elapsed,
        "encode_texts_per_s": n_texts / elapsed,
    }


def _vectors(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, centres.shape[0], size=n)
    vectors = centres[picks] + rng.normal(scale=0.04, size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


Corpus = tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]


def _corpus(n_vectors: int, n_queries: int) -> Corpus:
    """Stored vectors, their signal (an index into SIGNALS), queries and ids; the same every call."""
    rng = np.random.default_rng(42)
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    stored = _vectors(rng, n_vectors, centres)
    signals = rng.choice(len(SIGNALS), size=n_vectors, p=SIGNAL_P)
    queries = _vectors(rng, n_queries, centres)
    return stored, signals, queries, [f"fb_{i:07d}" for i in range(n_vectors)]


def _timed_searches(index: Any, corpus: Corpus, n_queries: int | None = None) -> tuple[np.ndarray, float]:
    """Latencies (ms) of filtered top-10 searches with the corpus' queries (the first `n_queries`),
    and their mean recall@10 against exact search."""
    from feedbackloop.recall.filters import RecallFilter

    stored, signals, queries, ids = corpus
    queries = queries[:n_queries]
    recall_filter = RecallFilter(signals=["thumbs_down"])
    mask = signals == SIGNALS.index("thumbs_down")
    masked_ids = np.asarray(ids)[mask]
    masked = stored[mask]
    latencies: list[float] = []
    recalls: list[float] = []
    for q in queries:
        t0 = time.perf_counter()
        hits = index.search("bench", q, TOPK, filter=recall_filter)
        latencies.append((time.perf_counter() - t0) * 1000)
        exact = set(masked_ids[np.argsort(-(masked @ q), kind="stable")[:TOPK]])
        recalls.append(len(exact & {h[0] for h in hits}) / TOPK)
    return np.asarray(latencies), float(np.mean(recalls))


def _load_then_search(path: str, n_vectors: int, n_queries: int, reply: Connection) -> None:
    """Child process: bulk-load the collection, then search while Lite indexes it.

    Milvus Lite seals what a flush writes and builds each sealed segment's HNSW index on a
    background thread; until that finishes it brute-forces the segment. Searches issued straight
    after a bulk load therefore measure that transient. When this process exits, Lite drains its
    background work before it closes the file, so the parent finds every segment indexed.
    """
    from feedbackloop.recall.index import FeedbackIndex, IndexRow

    corpus = _corpus(n_vectors, n_queries)
    stored, signals, _, ids = corpus
    index = FeedbackIndex(path, "bench")
    index.ensure_collection(DIM)
    start = time.perf_counter()
    for lo in range(0, n_vectors, 5000):
        index.upsert(
            [
                IndexRow(
                    id=ids[i],
                    project_id="bench",
                    vector=stored[i],
                    signals=(SIGNALS[signals[i]],),
                    occurred_at=1_700_000_000_000 + i,
                    negative=SIGNALS[signals[i]] == "thumbs_down",
                )
                for i in range(lo, min(lo + 5000, n_vectors))
            ]
        )
    load_s = time.perf_counter() - start
    index._client.flush(index.collection)  # seal the memtable: from here on Lite indexes in the background
    latencies, recall = _timed_searches(index, corpus)
    reply.send(
        {
            "load_seconds": load_s,
            "indexing_search_p50_ms": float(np.percentile(latencies, 50)),
            "indexing_search_p99_ms": float(np.percentile(latencies, 99)),
            "indexing_recall_at_10": recall,
        }
    )
    index.close()


def bench_search(n_vectors: int, n_queries: int) -> dict[str, float]:
    """Search latency twice: while Lite indexes a fresh bulk load, and once every segment is
    indexed (the steady state of a server that has been running, and what a restart finds)."""
    from feedbackloop.heap import freeze_startup_objects
    from feedbackloop.recall.index import FeedbackIndex

    corpus = _corpus(n_vectors, n_queries)
    with tempfile.TemporaryDirectory(prefix="recall-bench-") as tmp:
        path = os.path.join(tmp, "bench.db")
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        loader = context.Process(target=_load_then_search, args=(path, n_vectors, n_queries, send))
        started = time.perf_counter()
        loader.start()
        transient = receive.recv()
        loader.join()
        if loader.exitcode != 0:
            raise RuntimeError(f"the loading process failed (exit code {loader.exitcode})")
        drain_s = time.perf_counter() - started
        index = FeedbackIndex(path, "bench")
        try:
            index.ensure_collection(DIM)  # loads the persisted segment indexes
            freeze_startup_objects()  # as `serve` does once the model and the collection are loaded
            _timed_searches(index, corpus, 20)  # warm-up: first reads page segments in
            latencies, recall = _timed_searches(index, corpus)
        finally:
            gc.unfreeze()
            index.drop()
            index.close()
    signals = corpus[1]
    return {
        "stored_vectors": float(n_vectors),
        "filter_selectivity": float(np.mean(signals == SIGNALS.index("thumbs_down"))),
        **transient,
        "load_and_index_seconds": drain_s,
        "search_p50_ms": float(np.percentile(latencies, 50)),
        "search_p99_ms": float(np.percentile(latencies, 99)),
        "search_mean_ms": float(latencies.mean()),
        "recall_at_10": recall,
        "queries": float(n_queries),
    }


def run(quick: bool = False) -> dict[str, float]:
    """Run both benchmarks, print a table, and return the figures by name."""
    results: dict[str, float] = {}
    results.update(bench_encode(256 if quick else 2000))
    results.update(bench_search(10_000 if quick else 100_000, 50 if quick else 500))
    _print_table(results)
    return results


def _print_table(results: dict[str, float]) -> None:
    width = max(len(k) for k in results)
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  ----------")
    for key, value in results.items():
        shown = f"{value:,.0f}" if value.is_integer() else f"{value:,.3f}"
        print(f"{key:<{width}}  {shown}")


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv)
