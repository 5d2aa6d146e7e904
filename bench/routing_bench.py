"""Routing throughput against session size: events/s through the route stage (claim, load,
build the event, evaluate the example policy set plus a session policy, run actions, store
decision records, advance) for events in sessions that already hold 1, 100 and 10,000 events.

Target: flat within 20% across the three sizes (the lowest median at least 80% of the highest),
three rounds with the sizes interleaved. Each
size gets a fresh SQLite store; the earlier events are stored through the ingestion repository
and marked done, so only the measured events are routed. No aggregates are counted (no recall
hook), so the figure is the route stage's own cost. Beside wall-clock events/s it reports
events per second of the process's own CPU time, which a busy shared machine disturbs less
(the stage runs in one thread; the difference is mostly waiting for the CPU and for fsync).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import update

from feedbackloop.ingestion.repository import TraceIds, record_interaction, submit_feedback_batch
from feedbackloop.ingestion.validation import FeedbackInput, InteractionInput
from feedbackloop.pipeline.jobs import JobQueue, RetryPolicy
from feedbackloop.policy.validate import validate_dir
from feedbackloop.routing.revisions import LivePolicies
from feedbackloop.routing.router import Router
from feedbackloop.routing.stage import RouteStage
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.models import PipelineJob, utcnow

REPO = Path(__file__).resolve().parents[1]
SIZES = (1, 100, 10_000)
SESSION_POLICY = """
apiVersion: feedbackloop/v1
kind: RoutingPolicy
metadata:
  name: unhappy-session
spec:
  when: session.negative_count >= 3 && session.feedback_count > session.negative_count
  priority: 60
  continue: true
  cooldown: 1h
  actions:
    - human_review:
        queue: quality-review
        priority: 40
"""
COMMENTS = [
    "The price you quoted is from last year",
    "The answer was rude and condescending",
    "It invented an API function that does not exist",
    "Way too long, I needed one sentence",
]


def _policies(tmp: Path) -> Path:
    target = tmp / "policies"
    if target.exists():
        return target
    shutil.copytree(REPO / "policies", target, ignore=shutil.ignore_patterns("tests", "schema"))
    (target / "session.yaml").write_text(SESSION_POLICY)
    return target


def _events(interaction_id: str, count: int, tag: str) -> list[tuple[FeedbackInput, TraceIds]]:
    now = utcnow()
    return [
        (
            FeedbackInput(
                session_id="s", interaction_id=interaction_id, thumb="down" if i % 3 else "up",
                rating=None, categories=[], comment=f"{COMMENTS[i % len(COMMENTS)]} ({tag} {i})",
                correction="", implicit="", implicit_text="", source="end_user", user_id="u",
                user_role="customer", model_confidence=None, attributes={}, occurred_at=now,
                idempotency_key=None, payload_hash=f"{tag}-{i}",
            ),
            TraceIds(),
        )
        for i in range(count)
    ]  # fmt: skip


def _route_rate(tmp: Path, earlier: int, routed: int) -> tuple[float, float]:
    """(events per second of wall time, events per second of this process's CPU time)."""
    db = Database(f"sqlite:///{tmp / f'routing-{earlier}.db'}")
    db.upgrade()
    try:
        ensure_project(db, "bench")
        policy_set, errors = validate_dir(_policies(tmp))
        assert policy_set is not None, errors
        live = LivePolicies(db)
        live.apply("bench", policy_set, expected_revision=None, applied_by="bench")
        turn = InteractionInput(
            session_id="s", turn_index=0, user_id="u", user_role="customer", application="app",
            prompt_name="support-answer", prompt_version="1", model_name="m", model_version="v1",
            model_parameters={}, input_messages=[{"role": "user", "content": "How much is the Pro plan?"}],
            context_documents=[], response="It costs $10.", latency_ms=1, prompt_tokens=1, completion_tokens=1,
            attributes={}, occurred_at=utcnow(), payload_hash="turn",
        )  # fmt: skip
        interaction_id = record_interaction(db, "bench", turn, TraceIds()).id
        history = _events(interaction_id, earlier, "earlier")
        for start in range(0, len(history), 1000):
            submit_feedback_batch(db, "bench", history[start : start + 1000])
        with db.write() as session:  # the history was routed long ago
            session.execute(update(PipelineJob).values(status="done"))
        submit_feedback_batch(db, "bench", _events(interaction_id, routed, "routed"))
        with db.write() as session:  # indexing is not what is measured
            session.execute(update(PipelineJob).where(PipelineJob.status == "pending").values(stage="route"))
        db.refresh_statistics()
        stage = RouteStage(Router(db, live), batch_size=32)
        queue = JobQueue(db, RetryPolicy(3, 1.0, 1.0), lease_seconds=60)
        done = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        while jobs := queue.claim("route", stage.batch_size):
            outcomes = stage.process(jobs)
            failed = {j: e for j, e in outcomes.items() if e is not None}
            assert not failed, failed
            queue.advance(list(outcomes), "route")
            done += len(jobs)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        assert done == routed, (done, routed)
        return routed / elapsed, routed / cpu
    finally:
        db.dispose()


def run(quick: bool = False) -> dict[str, float]:
    routed = 100 if quick else 400
    rounds = 1 if quick else 3
    wall: dict[int, list[float]] = {size: [] for size in SIZES}
    cpu: dict[int, list[float]] = {size: [] for size in SIZES}
    with tempfile.TemporaryDirectory() as tmp:
        _route_rate(Path(tmp), 1, 32)  # warm-up: imports, CEL compilation, SQLite caches
        # Sizes interleaved, round after round, so a slow spell of a shared machine lands on
        # every size alike rather than on whichever ran at the time.
        for n in range(rounds):
            for size in SIZES:
                rate, cpu_rate = _route_rate(Path(tmp), size, routed)
                wall[size].append(rate)
                cpu[size].append(cpu_rate)
                print(
                    f"round {n + 1}: session of {size:>6,} earlier events: {rate:,.0f} events/s "
                    f"({cpu_rate:,.0f} per CPU second)"
                )
    result: dict[str, float] = {}
    for size in SIZES:
        result[f"route_events_per_s_session_{size}"] = statistics.median(wall[size])
        result[f"route_events_per_cpu_s_session_{size}"] = statistics.median(cpu[size])
    for name, rates in (("route_lowest_over_highest", wall), ("route_cpu_lowest_over_highest", cpu)):
        medians = [statistics.median(rates[size]) for size in SIZES]
        result[name] = min(medians) / max(medians)
    for size in SIZES:
        print(
            f"route stage, session of {size:>6,} earlier events: "
            f"{result[f'route_events_per_s_session_{size}']:,.0f} events/s, "
            f"{result[f'route_events_per_cpu_s_session_{size}']:,.0f} per CPU second "
            f"(median of {rounds}, {routed} routed)"
        )
    print(
        f"lowest / highest: {result['route_lowest_over_highest']:.2f} wall, "
        f"{result['route_cpu_lowest_over_highest']:.2f} CPU (target >= 0.80)"
    )
    return result


if __name__ == "__main__":
    run()
