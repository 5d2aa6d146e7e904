"""Pipeline throughput: feedback embedded and indexed per second, end to end through the job
queue (claim, load from SQL, embed, upsert into Milvus Lite, advance), next to the bare
`model.encode` rate on the same texts at the same batch size, in the same run.

The index stage embeds two texts per feedback (its own words and its user's question), each
distinct text of a batch once. Every seeded feedback has words and a question of its own, so
each costs two model inputs; the bare side encodes exactly the model inputs the stage does
(`distinct_texts` of each batch of `batch_size` feedback, in the stage's claim order), and both
rates are given per feedback and per embedded text.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import select

from feedbackloop.config import Settings
from feedbackloop.ingestion.repository import TraceIds, record_interaction, submit_feedback_batch
from feedbackloop.ingestion.validation import FeedbackInput, InteractionInput
from feedbackloop.pipeline.jobs import JobQueue, RetryPolicy
from feedbackloop.pipeline.worker import StageWorker
from feedbackloop.recall.embedder import Embedder
from feedbackloop.recall.service import Recall
from feedbackloop.recall.stage import IndexStage
from feedbackloop.recall.text import distinct_texts, embedded_texts
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.models import PipelineJob, utcnow

COMPLAINTS = [
    "The price you quoted is from last year",
    "The answer was rude and condescending",
    "It invented an API function that does not exist",
    "Way too long, I needed one sentence",
    "It answered in Spanish although I wrote in English",
    "Refused to help with a harmless question",
    "The code block formatting is broken",
    "It took forever and then timed out",
]
QUESTIONS = [
    "How much is the Pro plan?",
    "Can I export my data to CSV?",
    "Why was my card declined?",
    "How do I reset my password?",
    "Does the API support pagination?",
    "What is your refund policy?",
    "Can two people share one account?",
    "How do I cancel my subscription?",
]


def _seed(db: Database, n: int) -> None:
    ensure_project(db, "bench")
    now = utcnow()
    events = []
    for i in range(n):
        # One session per feedback, each with a question of its own: two model inputs apiece.
        interaction = InteractionInput(
            session_id=f"bench-{i}", turn_index=0, user_id="u", user_role="customer", application="app",
            prompt_name="support-answer", prompt_version="1", model_name="m", model_version="v1",
            model_parameters={}, input_messages=[{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} (order {i})"}],
            context_documents=[], response="It costs $10.", latency_ms=1, prompt_tokens=1, completion_tokens=1,
            attributes={}, occurred_at=now, payload_hash=f"x{i}",
        )  # fmt: skip
        interaction_id = record_interaction(db, "bench", interaction, TraceIds()).id
        comment = f"{COMPLAINTS[i % len(COMPLAINTS)]} (ticket {i})"
        data = FeedbackInput(
            session_id=f"bench-{i}", interaction_id=interaction_id, thumb="down", rating=None, categories=[],
            comment=comment, correction="", implicit="", implicit_text="", source="end_user", user_id="u",
            user_role="customer", model_confidence=None, attributes={}, occurred_at=now,
            idempotency_key=None, payload_hash=str(i),
        )  # fmt: skip
        events.append((data, TraceIds()))
    for start in range(0, n, 1000):
        submit_feedback_batch(db, "bench", events[start : start + 1000])


def run(quick: bool = False) -> dict[str, float]:
    n = 512 if quick else 2048
    batch_size = 64
    embedder = Embedder().load()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), embedding_batch_size=batch_size, policies_dir=None)
        db = Database(settings.effective_database_url)
        db.upgrade()
        _seed(db, n)
        recall = Recall(db, embedder, settings)
        recall.index  # open Milvus Lite and create the collection outside the timing  # noqa: B018
        with db.read() as session:
            ids = list(session.scalars(select(PipelineJob.feedback_id).order_by(PipelineJob.id)))
        rows = recall.load_feedback(ids)
        ordered = [embedded_texts(rows[i], rows[i].interaction) for i in ids]
        # The model inputs of each batch the stage will claim, deduplicated as the stage does.
        batches = [distinct_texts(ordered[s : s + batch_size]) for s in range(0, len(ordered), batch_size)]
        texts = sum(len(batch) for batch in batches)
        embedder.encode(batches[0])  # warm-up

        def bare_encode_seconds() -> float:
            started = time.perf_counter()
            for batch in batches:
                embedder.encode(batch)
            return time.perf_counter() - started

        # Bare runs before and after the pipeline run, so a change in machine load during the
        # run shows up on both sides of the ratio instead of only one.
        bare_seconds = bare_encode_seconds()

        queue = JobQueue(db, RetryPolicy(3, 1, 1), lease_seconds=60)
        worker = StageWorker(
            queue, IndexStage(recall, batch_size, 0.0), poll_seconds=0.01, wake=threading.Event()
        )
        started = time.perf_counter()
        while worker.run_once():
            pass
        pipeline_seconds = time.perf_counter() - started
        bare_seconds = (bare_seconds + bare_encode_seconds()) / 2
        indexed = queue.counts("bench").get("pending:route", 0)
        recall.close()
        db.dispose()
    if indexed != len(ids):
        raise RuntimeError(f"the pipeline indexed {indexed} of {len(ids)} feedback")
    bare_rate = len(ids) / bare_seconds
    pipeline_rate = indexed / pipeline_seconds
    per_feedback = texts / len(ids)
    results = {
        "pipeline.feedback": float(indexed),
        "pipeline.batch_size": float(batch_size),
        "pipeline.texts_per_feedback": per_feedback,
        "pipeline.bare_encode_feedback_per_s": bare_rate,
        "pipeline.bare_encode_texts_per_s": bare_rate * per_feedback,
        "pipeline.indexed_feedback_per_s": pipeline_rate,
        "pipeline.indexed_texts_per_s": pipeline_rate * per_feedback,
        "pipeline.ratio": pipeline_rate / bare_rate,
    }
    print(
        f"pipeline: {indexed} feedback ({texts} model inputs, {per_feedback:.2f} per feedback), "
        f"batch {batch_size}: bare encode {bare_rate:,.0f} feedback/s ({bare_rate * per_feedback:,.0f} "
        f"texts/s), end to end {pipeline_rate:,.0f} feedback/s ({pipeline_rate * per_feedback:,.0f} "
        f"texts/s) = {pipeline_rate / bare_rate:.0%} of bare (target >= 85%)"
    )
    return results


if __name__ == "__main__":
    run()
