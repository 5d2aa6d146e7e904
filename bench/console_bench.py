"""The review screen's next item, in a real Chromium, over a store of 100,000 feedback.

A real `feedbackloop serve` (subprocess, the bundled model, the example policies, the web console
on) on a SQLite store into which 100,000 feedback on 20,000 sessions of 5 turns were written
directly in SQL beforehand (the API and the model would take most of an hour here; the review
screen reads the store by id and runs no vector search, so the rows need no vectors). Then
`items` + 10 feedback marked `unsafe` go through the API and the pipeline into the safety queue,
each on a session of its own with a few turns of conversation.

Debian's Chromium (Playwright) signs in, takes an item, and then, for each item: `1` (accept) and
`Enter`. The time measured runs from the Enter keydown (its event time, in the page) to the end
of the load event of the next item's page (the resolve POST, its claim of the next item, the
303 and the GET of the screen with that item's context, parsed, styled and its scripts run),
both on the browser's clock (`performance.timeOrigin`). The first 10 are a warm-up.

Target: p95 under 200 ms. Server and browser share the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.serve_process import free_port, served

REPO = Path(__file__).resolve().parents[1]
QUEUE = "safety-review"
TARGET_P95_MS = 200.0
WARMUP = 10
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# On every page: remember when Enter went down, on the browser's clock, across the navigation.
MARK_ENTER = """document.addEventListener("keydown", (event) => {
  if (event.key === "Enter") sessionStorage.setItem("enter", String(performance.timeOrigin + event.timeStamp));
}, {capture: true});"""
LOADED = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const paint = performance.getEntriesByName("first-contentful-paint")[0];
  return {
    enter: Number(sessionStorage.getItem("enter")),
    origin: performance.timeOrigin,
    load: nav.loadEventEnd,
    paint: paint ? paint.startTime : null,
    item: document.getElementById("item")?.dataset.itemId || "",
  };
}"""


def seed(data_dir: Path, n: int) -> float:
    """`n` feedback and their interactions written straight into the store; seconds taken."""
    from sqlalchemy import insert

    from feedbackloop.config import Settings
    from feedbackloop.store.db import Database
    from feedbackloop.store.keys import ensure_project
    from feedbackloop.store.models import Feedback, Interaction, utcnow

    started = time.perf_counter()
    settings = Settings(data_dir=data_dir, policies_dir=None)
    db = Database(settings.effective_database_url)
    db.upgrade()
    ensure_project(db, settings.default_project)
    now = utcnow()
    with db.write() as session:
        for lo in range(0, n, 10_000):
            chunk = range(lo, min(lo + 10_000, n))
            session.execute(
                insert(Interaction),
                [
                    dict(
                        id=f"int_seed_{i:07d}",
                        project_id=settings.default_project,
                        session_id=f"seed-{i // 5:06d}",
                        turn_index=i % 5,
                        prompt_name="support-answer",
                        model_version="v1",
                        payload_hash=str(i),
                        occurred_at=now - timedelta(seconds=n - i),
                        received_at=now,
                        model_parameters={},
                        input_messages=[{"role": "user", "content": f"Question {i} about my order"}],
                        context_documents=[],
                        attributes={},
                        response=f"Answer {i}: your order ships tomorrow.",
                    )
                    for i in chunk
                ],
            )
            session.execute(
                insert(Feedback),
                [
                    dict(
                        id=f"fb_seed_{i:07d}",
                        project_id=settings.default_project,
                        session_id=f"seed-{i // 5:06d}",
                        interaction_id=f"int_seed_{i:07d}",
                        thumb="down" if i % 3 else "up",
                        comment=f"comment {i}: the answer was not what I needed",
                        source="end_user",
                        payload_hash=str(i),
                        attributes={},
                        occurred_at=now - timedelta(seconds=n - i),
                        received_at=now,
                    )
                    for i in chunk
                ],
            )
    db.dispose()
    return time.perf_counter() - started


def queue_items(address: str, n: int, timeout: float = 600.0) -> float:
    """`n` unsafe thumbs down through the API, each on a 3-turn session; waits until all are
    in the safety queue. Seconds taken."""
    from feedbackloop.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc, reviews_pb2, reviews_pb2_grpc

    started = time.perf_counter()
    with grpc.insecure_channel(address) as channel:
        ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel)
        reviews = reviews_pb2_grpc.ReviewServiceStub(channel)
        for k in range(n):
            last = ""
            for turn in range(3):
                last = ingestion.RecordInteraction(
                    ingestion_pb2.RecordInteractionRequest(
                        interaction=common_pb2.Interaction(
                            session_id=f"review-{k:05d}",
                            turn_index=turn,
                            input_messages=[
                                common_pb2.ChatMessage(
                                    role="user", content=f"Turn {turn}: how do I reset it?"
                                )
                            ],
                            response=f"Turn {turn}: here is what to do, step by step.",
                        )
                    ),
                    timeout=30,
                ).interaction_id
            ingestion.SubmitFeedback(
                ingestion_pb2.SubmitFeedbackRequest(
                    feedback=common_pb2.Feedback(
                        session_id=f"review-{k:05d}",
                        interaction_id=last,
                        thumb=common_pb2.THUMB_DOWN,
                        categories=["unsafe"],
                        comment=f"item {k}: it told me to turn off two-factor authentication",
                    )
                ),
                timeout=30,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = reviews.GetReviewQueueStats(
                reviews_pb2.GetReviewQueueStatsRequest(queue=QUEUE), timeout=30
            )
            queued = sum(q.open + q.claimed + q.done for q in stats.queues if q.queue == QUEUE)
            if queued >= n:
                return time.perf_counter() - started
            time.sleep(0.5)
    raise RuntimeError(f"fewer than {n} items reached {QUEUE} in {timeout}s")


def review(console_url: str, items: int) -> dict[str, Any]:
    """Resolve `items` (after the warm-up) with the keyboard; per-item latencies in ms."""
    from playwright.sync_api import sync_playwright

    load_ms: list[float] = []
    paint_ms: list[float] = []
    wall_ms: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.add_init_script(MARK_ENTER)
            page.goto(f"{console_url}/sign-in")
            page.get_by_role("button", name="Continue without a key").click()
            page.wait_for_url(lambda url: "/sign-in" not in url)
            page.goto(f"{console_url}/reviews/{QUEUE}")
            with page.expect_navigation():
                page.keyboard.press("n")
            shown = page.evaluate(LOADED)["item"]
            for k in range(WARMUP + items):
                if not shown:
                    raise RuntimeError(f"the queue ran out after {k} items")
                page.keyboard.press("1")
                t0 = time.perf_counter()
                with page.expect_navigation(wait_until="load"):
                    page.keyboard.press("Enter")
                loaded = page.evaluate(LOADED)
                wall = (time.perf_counter() - t0) * 1000
                if loaded["item"] == shown:
                    raise RuntimeError(f"item {shown} was shown again after resolving it")
                shown = loaded["item"]
                if k < WARMUP:
                    continue
                load_ms.append(loaded["origin"] + loaded["load"] - loaded["enter"])
                if loaded["paint"] is not None:
                    paint_ms.append(loaded["origin"] + loaded["paint"] - loaded["enter"])
                wall_ms.append(wall)
        finally:
            browser.close()
    return {"load": np.asarray(load_ms), "paint": np.asarray(paint_ms), "wall": np.asarray(wall_ms)}


def chromium() -> str:
    path = os.environ.get("FEEDBACKLOOP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(path)
    return path


def run(quick: bool = False, items: int | None = None, stored: int | None = None) -> dict[str, float]:
    items = items or (20 if quick else 200)
    stored = stored if stored is not None else (5_000 if quick else 100_000)
    try:
        chromium()
    except FileNotFoundError:
        print("   Chromium is not installed (apt-get install chromium): skipped")
        return {}
    with tempfile.TemporaryDirectory(prefix="fl-console-bench-") as tmp:
        data = Path(tmp)
        seeded = seed(data, stored)
        console_port = free_port()
        env = {
            "FEEDBACKLOOP_POLICIES_DIR": str(REPO / "policies"),
            "FEEDBACKLOOP_DATABASE_URL": "",
            "FEEDBACKLOOP_CONSOLE": "on",
            "FEEDBACKLOOP_CONSOLE_PORT": str(console_port),
            "FEEDBACKLOOP_PIPELINE_POLL_SECONDS": "0.05",
            "FEEDBACKLOOP_EMBEDDING_BATCH_MAX_WAIT_MS": "20",
            "FEEDBACKLOOP_INDEX_CHECK_INTERVAL_SECONDS": "0",
            "OTEL_SDK_DISABLED": "true",
        }
        with served(data, env, stop_timeout=30) as address:
            queued = queue_items(address, items + WARMUP + 1)
            measured = review(f"http://127.0.0.1:{console_port}", items)
    load, paint, wall = measured["load"], measured["paint"], measured["wall"]
    figures = {
        "stored_feedback": float(stored),
        "items": float(len(load)),
        "seed_seconds": seeded,
        "queue_seconds": queued,
        "next_item_load_p50_ms": float(np.percentile(load, 50)),
        "next_item_load_p95_ms": float(np.percentile(load, 95)),
        "next_item_load_p99_ms": float(np.percentile(load, 99)),
        "next_item_load_max_ms": float(load.max()),
        "first_paint_p95_ms": float(np.percentile(paint, 95)) if len(paint) else float("nan"),
        "playwright_wall_p95_ms": float(np.percentile(wall, 95)),
    }
    verdict = "met" if figures["next_item_load_p95_ms"] < TARGET_P95_MS else "NOT met"
    print(
        f"   next review item, Enter to the next page loaded, over {stored:,} stored feedback: "
        f"p50 {figures['next_item_load_p50_ms']:.0f} ms, p95 {figures['next_item_load_p95_ms']:.0f} ms "
        f"(target < {TARGET_P95_MS:.0f} ms: {verdict})"
    )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--items", type=int, help="items resolved and timed (after the warm-up)")
    parser.add_argument("--stored", type=int, help="feedback written into the store beforehand")
    args = parser.parse_args()
    for key, value in run(quick=args.quick, items=args.items, stored=args.stored).items():
        print(f"{key:<32} {value:>12,.2f}")
