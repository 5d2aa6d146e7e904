"""TopIssues latency: a window of 1,000, 10,000 and 100,000 negative feedback, and where it goes.

Two measurements:

(a) **clustering alone** (`recall.clustering.top_issues`: sample, spectral embedding, HDBSCAN,
    bounds, assignment of the rest, growth against a previous window of the same size) on
    in-memory vectors, at each size: how the grouping's cost grows with the window;
(b) **the whole RPC path** (`recall.issues.top_issues`, what `TopIssues` runs after validation)
    over a seeded store (SQLite + Milvus Lite): reading the window's and the previous window's
    vectors from Milvus, clustering, labels (the clustered members' words from SQL, c-TF-IDF),
    matching to the stored groups, and hydrating the representatives and members' categories.
    Each stage's share is printed. Then GetTrends by TopIssues group over the same window
    (`recall.issue_trends`: both windows' complaints grouped once, the members' times from SQL).

Vectors are synthetic: 300 complaint centres with noise giving about 0.65 cosine within a cause
(MiniLM's spread on one cause of the labeled sets), each feedback with a short comment drawn
from its centre's vocabulary, so labels are computed on real words. Embedding 100k texts with
the model on this machine would take longer than the benchmark. One feedback a second, newest
first: a window of n seconds holds n feedback and its previous window the n before.

The store is seeded in a child process; when it exits, Milvus Lite finishes its background index
build, so the queries run against a flushed, indexed collection, as on a server that has been up.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from feedbackloop.config import Settings
from feedbackloop.ingestion.repository import FeedbackQuery
from feedbackloop.recall import clustering, issue_trends, issues, trends
from feedbackloop.recall.filters import RecallFilter
from feedbackloop.recall.index import IndexRow
from feedbackloop.recall.service import Recall
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.models import Feedback

DIM = 384
PROJECT = "bench"
CENTRES = 300
NOISE = 0.07  # per-dimension; about 0.65 cosine between two feedback of one centre
WORDS = [
    "tax",
    "rate",
    "currency",
    "total",
    "invoice",
    "price",
    "plan",
    "late",
    "fee",
    "due",
    "date",
    "duplicate",
    "client",
    "address",
    "recurring",
    "reminder",
    "paid",
    "unpaid",
    "card",
    "stripe",
    "bank",
    "sync",
    "pdf",
    "export",
    "email",
    "spam",
    "discount",
    "language",
    "credit",
    "refund",
    "expense",
    "category",
    "quickbooks",
    "xero",
    "feature",
    "button",
    "rude",
    "tone",
    "long",
    "verbose",
    "slow",
    "timeout",
    "team",
    "access",
]
END = datetime(2026, 6, 1, tzinfo=UTC)


class _FixedDimension:
    """Stands in for the embedder's dimension only: this benchmark stores synthetic vectors."""

    dimension = DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        raise RuntimeError("the TopIssues benchmark never embeds text")


def _vectors(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(CENTRES, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Causes of unequal size, as complaints are: a few large ones and a long tail.
    weights = 1.0 / np.arange(1, CENTRES + 1)
    cause = rng.choice(CENTRES, size=n, p=weights / weights.sum())
    vectors = centres[cause] + rng.normal(scale=NOISE, size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), cause


def _comment(cause: int, rng: np.random.Generator) -> str:
    own = [WORDS[(cause * 7 + k) % len(WORDS)] for k in range(3)]
    return " ".join([*rng.choice(own, size=3), *rng.choice(WORDS, size=2)])


def _seed(db: Database, recall: Recall, n: int) -> None:
    rng = np.random.default_rng(11)
    ensure_project(db, PROJECT)
    vectors, cause = _vectors(n, rng)
    ids = [f"fb_bench_{i:07d}" for i in range(n)]
    at = [END - timedelta(seconds=i + 0.5) for i in range(n)]
    with db.write() as session:
        for lo in range(0, n, 10_000):
            session.execute(
                insert(Feedback),
                [
                    dict(
                        id=ids[i],
                        project_id=PROJECT,
                        session_id=f"s-{i:07d}",
                        thumb="down",
                        comment=_comment(int(cause[i]), rng),
                        source="end_user",
                        payload_hash=str(i),
                        attributes={},
                        occurred_at=at[i],
                        received_at=END,
                    )
                    for i in range(lo, min(lo + 10_000, n))
                ],
            )
    for lo in range(0, n, 5000):
        recall.index.upsert(
            [
                IndexRow(
                    id=ids[i],
                    project_id=PROJECT,
                    vector=vectors[i],
                    signals=("thumbs_down", "comment"),
                    source="end_user",
                    occurred_at=int(at[i].timestamp() * 1000),
                    negative=True,
                )
                for i in range(lo, min(lo + 5000, n))
            ]
        )


def _seed_in_child(data_dir: str, n: int, reply: Connection) -> None:
    settings = Settings(data_dir=Path(data_dir), policies_dir=None)
    db = Database(settings.effective_database_url)
    db.upgrade()
    recall = Recall(db, _FixedDimension(), settings)  # type: ignore[arg-type]
    started = time.perf_counter()
    _seed(db, recall, n)
    db.refresh_statistics()
    reply.send(time.perf_counter() - started)
    recall.close()
    db.dispose()


def bench_clustering(sizes: tuple[int, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    rng = np.random.default_rng(5)
    for n in sizes:
        vectors, _ = _vectors(2 * n, rng)
        ids = [f"f{i:07d}" for i in range(2 * n)]
        current = list(zip(ids[:n], vectors[:n], strict=True))
        previous = list(zip(ids[n:], vectors[n:], strict=True))
        clustering.top_issues(current[: min(n, 500)])  # warm-up: imports, BLAS threads
        started = time.perf_counter()
        result = clustering.top_issues(current, previous)
        seconds = time.perf_counter() - started
        out[f"cluster_only.{n}.seconds"] = seconds
        out[f"cluster_only.{n}.groups"] = float(result.groups_found)
        out[f"cluster_only.{n}.unclustered_share"] = len(result.unclustered_ids) / n
        print(
            f"clustering {n:>7,} (+{n:,} previous): {seconds * 1000:7.0f} ms, {result.groups_found} groups, "
            f"{len(result.unclustered_ids) / n:.0%} unclustered (sample {result.sample_size})"
        )
    return out


def bench_rpc_path(sizes: tuple[int, ...]) -> dict[str, float]:
    total = 2 * max(sizes)  # each window and its previous one
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="top-issues-bench-") as tmp:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        seeder = context.Process(target=_seed_in_child, args=(tmp, total, send))
        seeder.start()
        load_seconds = receive.recv()
        seeder.join()
        if seeder.exitcode != 0:
            raise RuntimeError(f"the seeding process failed (exit code {seeder.exitcode})")
        print(f"seeded {total:,} feedback in {load_seconds:.0f} s")
        out["rpc.seed_seconds"] = load_seconds
        settings = Settings(data_dir=Path(tmp), policies_dir=None)
        db = Database(settings.effective_database_url)
        recall = Recall(db, _FixedDimension(), settings)  # type: ignore[arg-type]
        negative = RecallFilter(negative_only=True)
        for n in sizes:
            start = END - timedelta(seconds=n)
            window = issues.Window(PROJECT, negative, start, END, start - timedelta(seconds=n))
            issues.top_issues(recall, window, min_similarity=0.0, min_size=2, max_issues=10)  # warm-up
            timings: dict[str, float] = {}
            started = time.perf_counter()
            response = issues.top_issues(
                recall, window, min_similarity=0.0, min_size=2, max_issues=10, timings=timings
            )
            seconds = time.perf_counter() - started
            assert response.total_negative == n, (response.total_negative, n)
            out[f"rpc.{n}.seconds"] = seconds
            shares = ", ".join(f"{k} {v:.2f} s ({v / seconds:.0%})" for k, v in timings.items())
            for step, spent in timings.items():
                out[f"rpc.{n}.{step}_seconds"] = spent
            print(f"TopIssues {n:>7,}: {seconds:6.2f} s  [{shares}]")
            # GetTrends by TopIssues group over the same window: one grouping of both windows'
            # complaints (2n), then the members' times from SQL for ten buckets.
            span = trends.TrendWindow(
                start, END, timedelta(seconds=max(1, n // 10)), start - timedelta(seconds=n)
            )
            started = time.perf_counter()
            found = issue_trends.issue_trends(recall, PROJECT, FeedbackQuery(), negative, span, 10)
            seconds = time.perf_counter() - started
            out[f"rpc.{n}.trends_by_issue_seconds"] = seconds
            print(
                f"GetTrends by issue {n:>7,} (both windows: {2 * n:,} complaints): {seconds:6.2f} s, "
                f"{found.groups_found} groups"
            )
        recall.close()
        db.dispose()
    return out


def run(quick: bool = False) -> dict[str, float]:
    sizes = (1_000, 5_000) if quick else (1_000, 10_000, 100_000)
    results = bench_clustering(sizes)
    results.update(bench_rpc_path(sizes))
    return results


if __name__ == "__main__":
    run()
