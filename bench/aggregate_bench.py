"""Aggregate evaluation latency: how long a policy with `aggregate` takes to count similar
signals, over 100,000 stored feedback vectors in Milvus Lite (and their rows in SQLite).

The count runs as routing runs it (`RecallSimilarFeedback`): the feedback's vector from Milvus,
a nearest-neighbour search restricted to the window and the group, each neighbour read back
from SQL and checked against the policy's condition. Vectors are synthetic (200 clusters of
about 500, about 0.87 cosine within a cluster, so an evaluation counts nine or so neighbours in
its window and group) because embedding 100k texts with the real model on 2 cores would take
longer than the whole benchmark; their dimension is the model's. Feedback comes in sessions of
four, as a chat product's would.

The store is seeded in a child process; when it exits, Milvus Lite finishes its background index
build, so the evaluations run against an indexed collection, as on a server that has been up.
"""

from __future__ import annotations

import gc
import multiprocessing
import tempfile
import time
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from feedbackloop.config import Settings
from feedbackloop.heap import freeze_startup_objects
from feedbackloop.policy.engine import compile_condition
from feedbackloop.recall.index import IndexRow
from feedbackloop.recall.service import Recall
from feedbackloop.routing.similarity import RecallSimilarFeedback
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.models import Feedback, FeedbackCategory, Interaction, utcnow

DIM = 384
PROJECT = "bench"
MODEL_VERSIONS = ("v1", "v2", "v3", "v4")
FEEDBACK_PER_SESSION = 4
WHEN = '"outdated_info" in feedback.categories && interaction.prompt_name != ""'


class _FixedDimension:
    """Stands in for the embedder's dimension only: this benchmark stores synthetic vectors."""

    dimension = DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        raise RuntimeError("the aggregate benchmark never embeds text")


def _seed(db: Database, recall: Recall, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    ensure_project(db, PROJECT)
    now = utcnow()
    centres = rng.normal(size=(n // 500, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, len(centres), size=n)
    noise = rng.normal(size=(n, DIM)).astype(np.float32) * 0.02
    vectors = centres[cluster] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ages = rng.uniform(0, 7 * 86400, size=n)
    # Sessions of a few turns, each on one model version: a policy event reads its session's
    # counts, so one giant session would make every neighbour's event read thousands of rows.
    sessions = np.arange(n) // FEEDBACK_PER_SESSION
    session_versions = rng.integers(0, len(MODEL_VERSIONS), size=int(sessions[-1]) + 1)
    versions = session_versions[sessions]
    outdated = rng.random(n) < 0.5
    ids = [f"fb_bench_{i:07d}" for i in range(n)]
    with db.write() as session:
        session.execute(
            insert(Interaction),
            [
                dict(
                    id=f"int_bench_{s:06d}",
                    project_id=PROJECT,
                    session_id=f"s-{s:06d}",
                    turn_index=0,
                    prompt_name="support-answer",
                    model_version=MODEL_VERSIONS[v],
                    payload_hash="x",
                    occurred_at=now,
                    received_at=now,
                    model_parameters={},
                    input_messages=[],
                    context_documents=[],
                    attributes={},
                )
                for s, v in enumerate(session_versions)
            ],
        )
        for lo in range(0, n, 10_000):
            chunk = range(lo, min(lo + 10_000, n))
            session.execute(
                insert(Feedback),
                [
                    dict(
                        id=ids[i],
                        project_id=PROJECT,
                        session_id=f"s-{sessions[i]:06d}",
                        interaction_id=f"int_bench_{sessions[i]:06d}",
                        thumb="down",
                        comment=f"complaint {i}",
                        source="end_user",
                        payload_hash=str(i),
                        attributes={},
                        occurred_at=now - timedelta(seconds=float(ages[i])),
                        received_at=now,
                    )
                    for i in chunk
                ],
            )
            session.execute(
                insert(FeedbackCategory),
                [
                    {"feedback_id": ids[i], "category": "outdated_info", "position": 0}
                    for i in chunk
                    if outdated[i]
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
                    categories=("outdated_info",) if outdated[i] else (),
                    model_version=MODEL_VERSIONS[versions[i]],
                    prompt_name="support-answer",
                    source="end_user",
                    occurred_at=int((now - timedelta(seconds=float(ages[i]))).timestamp() * 1000),
                    negative=True,
                )
                for i in range(lo, min(lo + 5000, n))
            ]
        )
    recall.index._client.flush(
        recall.index.collection
    )  # seal the memtable; Lite indexes it in the background
    return [(ids[i], MODEL_VERSIONS[versions[i]]) for i in np.flatnonzero(outdated)]


def _seed_in_child(data_dir: str, n: int, reply: Connection) -> None:
    """Child process: seed SQLite and Milvus Lite, send back the candidates and the load time.

    When this process exits, Milvus Lite finishes its background index build before it closes
    the file, so the parent measures every segment indexed: the steady state of a running server
    (searches during the build brute-force the unindexed segments and say nothing about it).
    """
    settings = Settings(data_dir=Path(data_dir), policies_dir=None)
    db = Database(settings.effective_database_url)
    db.upgrade()
    recall = Recall(db, _FixedDimension(), settings)  # type: ignore[arg-type]
    started = time.perf_counter()
    candidates = _seed(db, recall, n, np.random.default_rng(7))
    db.refresh_statistics()  # as a running server's StatisticsRefresher does every minute
    reply.send((candidates, time.perf_counter() - started))
    recall.close()
    db.dispose()


def run(quick: bool = False) -> dict[str, float]:
    n = 20_000 if quick else 100_000
    queries = 50 if quick else 200
    rng = np.random.default_rng(8)
    with tempfile.TemporaryDirectory(prefix="aggregate-bench-") as tmp:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        seeder = context.Process(target=_seed_in_child, args=(tmp, n, send))
        seeder.start()
        candidates, load_seconds = receive.recv()
        seeder.join()
        if seeder.exitcode != 0:
            raise RuntimeError(f"the seeding process failed (exit code {seeder.exitcode})")
        settings = Settings(data_dir=Path(tmp), policies_dir=None)
        db = Database(settings.effective_database_url)
        recall = Recall(db, _FixedDimension(), settings)  # type: ignore[arg-type]
        similar = RecallSimilarFeedback(db, recall)
        recall.index  # noqa: B018 - open the collection, then freeze the heap, as `serve` does
        freeze_startup_objects()
        condition = compile_condition(WHEN)
        picks = rng.choice(len(candidates), size=queries, replace=False)
        latencies: list[float] = []
        counts: list[int] = []
        for pick in picks:
            feedback_id, version = candidates[int(pick)]
            t0 = time.perf_counter()
            found = similar.similar_feedback(
                PROJECT,
                feedback_id,
                group={"interaction.prompt_name": "support-answer", "interaction.model_version": version},
                min_similarity=0.8,
                window=timedelta(hours=24),
                condition=condition,
            )
            latencies.append((time.perf_counter() - t0) * 1000)
            counts.append(len(found))
        recall.close()
        db.dispose()
        gc.unfreeze()
    lat = np.asarray(latencies[1:])  # the first query loads segments
    results = {
        "aggregate.stored_vectors": float(n),
        "aggregate.load_seconds": load_seconds,
        "aggregate.p50_ms": float(np.percentile(lat, 50)),
        "aggregate.p99_ms": float(np.percentile(lat, 99)),
        "aggregate.mean_similar": float(np.mean(counts)),
    }
    print(
        f"aggregate: {n:,} vectors, {len(lat)} evaluations: p50 {results['aggregate.p50_ms']:.1f} ms, "
        f"p99 {results['aggregate.p99_ms']:.1f} ms (target <= 50 ms); "
        f"{results['aggregate.mean_similar']:.1f} similar signals counted on average"
    )
    return results


if __name__ == "__main__":
    run()
