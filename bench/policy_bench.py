"""Policy engine throughput: events/s for 50 non-aggregate routing policies on one core.

Target: >= 20,000 events/s. Events are realistic in size (several input messages, context
documents and a long response), since converting event data into CEL values is the cost
that dominates; `run()` returns the figures so `python -m bench` can collect them.
"""

from __future__ import annotations

import time
from typing import Any

from feedbackloop.policy.engine import CompiledPolicySet, InMemoryState
from feedbackloop.policy.event import make_event
from feedbackloop.policy.model import HumanReview, RoutingPolicy

POLICIES = 50
EVENTS = 2_000


def _policies() -> list[RoutingPolicy]:
    conditions = [
        'feedback.thumb == "down" && "cat{i}" in feedback.categories',
        'feedback.comment.contains("word{i}") && interaction.prompt_name == "prompt-{i}"',
        'feedback.rating > 0 && feedback.rating <= 2 && interaction.model_version == "v{i}"',
        'feedback.implicit == "regenerate" && session.negative_count > {i}',
        'feedback.attributes["team"] == "team-{i}"',
    ]
    return [
        RoutingPolicy(
            name=f"policy-{i:02d}",
            when=conditions[i % len(conditions)].format(i=i),
            actions=(HumanReview(queue="quality-review", priority=i),),
            priority=i % 7,
            sample=0.5 if i % 10 == 0 else 1.0,
            continue_=True,
        )
        for i in range(POLICIES)
    ]


def _events() -> list[dict[str, dict[str, Any]]]:
    events = []
    for n in range(EVENTS):
        events.append(
            make_event(
                {
                    "feedback": {
                        "id": f"fb-{n}",
                        "thumb": "down" if n % 2 else "up",
                        "rating": n % 5,
                        "categories": [f"cat{n % 60}"],
                        "comment": f"this answer is wrong word{n % 70} " * 3,
                        "implicit": "regenerate" if n % 3 == 0 else "",
                        "attributes": {"team": f"team-{n % 55}"},
                        "signals": ["thumbs_down", "comment"],
                        "negative": True,
                    },
                    "interaction": {
                        "prompt_name": f"prompt-{n % 50}",
                        "model_version": f"v{n % 45}",
                        "input_messages": [{"role": "user", "content": "How do I reset my password? " * 10}]
                        * 6,
                        "context_documents": [
                            {"id": f"doc-{d}", "text": "lorem ipsum " * 80, "score": 0.7} for d in range(5)
                        ],
                        "response": "You can reset it from the settings page. " * 30,
                    },
                    "session": {"id": "s", "turn_count": 6, "feedback_count": 2, "negative_count": n % 9},
                }
            )
        )
    return events


def run() -> dict[str, float]:
    compiled = CompiledPolicySet(_policies())
    events = _events()
    state = InMemoryState()
    for event in events[:200]:  # warm-up
        compiled.evaluate(event, state=state)
    matched = 0
    start = time.perf_counter()
    for event in events:
        for decision in compiled.evaluate(event, state=state):
            matched += decision.outcome == "matched"
    elapsed = time.perf_counter() - start
    result = {
        "policy_events_per_s": len(events) / elapsed,
        "policy_us_per_event": elapsed / len(events) * 1e6,
        "policy_matches_per_event": matched / len(events),
        "policy_count": float(POLICIES),
    }
    print(
        f"policy engine: {result['policy_events_per_s']:,.0f} events/s "
        f"({result['policy_us_per_event']:.1f} us/event, {POLICIES} policies, "
        f"{result['policy_matches_per_event']:.2f} matches/event)"
    )
    return result


if __name__ == "__main__":
    run()
