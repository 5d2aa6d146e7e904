"""Aggregate evaluation latency: how long a policy with `aggregate` takes to count similar
signals, over 100,000 stored feedback vectors in Milvus Lite (and their rows in SQLite).

The count runs as routing runs it (`RecallSimilarFeedback`): the feedback's vector from Milvus,
a nearest-neighbour search restricted to the window and the group, each neighbour read back
from SQL and checked against the policy's condition. Vectors are synthetic (clustered around
random centres, about 0.85 cosine within a cluster) because embedding 100k texts with the real
model on 2 cores would take longer than the whole benchmark; their dimension is the model's.
"""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from feedbackloop.config import Settings
from feedbackloop.recall.index import IndexRow
from feedbackloop.recall.service import Recall
from feedbackloop.routing.similarity import RecallSimilarFeedback
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.models import Feedback, FeedbackCategory, Interaction, utcnow

DIM = 384
PROJECT = "bench"
MODEL_VERSIONS = ("v1", "v2", "v3", "v4")
WHEN = '"outdated_info" in feedback.categories && interaction.prompt_name != ""'


class _FixedDimension:
    """Stands in for the embedder's dimension only: this benchmark stores synthetic vectors."""

    dimension = DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        raise RuntimeError("the aggregate benchmark never embeds text")


def _seed(db: Database, recall: Recall, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    ensure_project(db, PROJECT)
    now = utcnow()
    centres = rng.normal(size=(n // 50, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, len(centres), size=n)
    noise = rng.normal(size=(n, DIM)).astype(np.float32) * 0.03
    vectors = centres[cluster] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ages = rng.uniform(0, 7 * 86400, size=n)
    versions = rng.integers(0, len(MODEL_VERSIONS), size=n)
    outdated = rng.random(n) < 0.5
    interactions = {v: f"int_bench_{v}" for v in MODEL_VERSIONS}
    ids = [f"fb_bench_{i:07d}" for i in range(n)]
    with db.write() as session:
        session.execute(
            insert(Interaction),
            [
                dict(
                    id=interaction_id,
                    project_id=PROJECT,
                    session_id=f"s-{v}",
                    turn_index=0,
                    prompt_name="support-answer",
                    model_version=v,
                    payload_hash="x",
                    occurred_at=now,
                    received_at=now,
                    model_parameters={},
                    input_messages=[],
                    context_documents=[],
                    attributes={},
                )
                for v, interaction_id in interactions.items()
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
                        session_id=f"s-{MODEL_VERSIONS[versions[i]]}",
                        interaction_id=interactions[MODEL_VERSIONS[versions[i]]],
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
    recall.index._client.flush(recall.index.collection)  # sealed and indexed, as a running server's would be
    return [(ids[i], MODEL_VERSIONS[versions[i]]) for i in np.flatnonzero(outdated)]


def run(quick: bool = False) -> dict[str, float]:
    n = 20_000 if quick else 100_000
    queries = 50 if quick else 200
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="aggregate-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), policies_dir=None)
        db = Database(settings.effective_database_url)
        db.upgrade()
        recall = Recall(db, _FixedDimension(), settings)  # type: ignore[arg-type]
        started = time.perf_counter()
        candidates = _seed(db, recall, n, rng)
        load_seconds = time.perf_counter() - started
        similar = RecallSimilarFeedback(db, recall)
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
                when=WHEN,
            )
            latencies.append((time.perf_counter() - t0) * 1000)
            counts.append(len(found))
        recall.close()
        db.dispose()
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
