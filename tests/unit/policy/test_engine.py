from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from feedbackloop.policy.engine import (
    CompiledPolicySet,
    Decision,
    InMemoryState,
    Outcome,
    PolicyCompileError,
    sample_bucket,
)
from feedbackloop.policy.event import EventError, make_event
from feedbackloop.policy.model import Aggregate, DatasetAdd, HumanReview, RoutingPolicy

REVIEW = (HumanReview("q", 50),)


def policy(name: str, when: str = "true", **kw: object) -> RoutingPolicy:
    return RoutingPolicy(name=name, when=when, actions=kw.pop("actions", REVIEW), **kw)  # type: ignore[arg-type]


def outcomes(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(d.policy, d.outcome.value) for d in decisions]


def test_priority_desc_then_name_and_first_match_stops() -> None:
    engine = CompiledPolicySet(
        [policy("b-low", priority=1), policy("z-high", priority=9), policy("a-low", priority=1)]
    )
    assert engine.policy_names == ["z-high", "a-low", "b-low"]
    decisions = engine.evaluate(make_event(), state=InMemoryState())
    assert outcomes(decisions) == [("z-high", "matched")]
    assert decisions[0].actions == REVIEW


def test_continue_lets_evaluation_go_on() -> None:
    engine = CompiledPolicySet(
        [
            policy("first", priority=3, continue_=True),
            policy("second", 'feedback.thumb == "up"', priority=2),
            policy("third", priority=1, actions=(DatasetAdd("d"),)),
            policy("fourth", priority=0),
        ]
    )
    decisions = engine.evaluate(make_event({"feedback": {"thumb": "down"}}), state=InMemoryState())
    assert outcomes(decisions) == [("first", "matched"), ("second", "condition_false"), ("third", "matched")]
    assert decisions[1].reason == 'condition is false: feedback.thumb == "up"'
    assert decisions[2].actions == (DatasetAdd("d"),)


def test_conditions_see_every_event_section() -> None:
    engine = CompiledPolicySet(
        [
            policy(
                "all",
                'feedback.categories.exists(c, c == "unsafe") && interaction.model_version == "v2" '
                '&& session.negative_count >= 2 && feedback.attributes["team"] == "a"',
            )
        ]
    )
    base = {
        "feedback": {"categories": ["unsafe"], "attributes": {"team": "a"}},
        "interaction": {"model_version": "v2"},
        "session": {"negative_count": 2},
    }
    assert outcomes(engine.evaluate(make_event(base), state=InMemoryState())) == [("all", "matched")]
    base["session"] = {"negative_count": 1}
    assert outcomes(engine.evaluate(make_event(base), state=InMemoryState())) == [("all", "condition_false")]


def test_runtime_error_is_an_error_outcome_and_evaluation_continues() -> None:
    engine = CompiledPolicySet(
        [policy("needs-team", 'feedback.attributes["team"] == "a"', priority=1), policy("next")]
    )
    decisions = engine.evaluate(make_event(), state=InMemoryState())
    assert outcomes(decisions) == [("needs-team", "error"), ("next", "matched")]
    assert decisions[0].reason.startswith("condition failed:")


def test_sampling_is_deterministic_per_policy_and_event() -> None:
    engine = CompiledPolicySet([policy("half", sample=0.5)])
    ids = [f"fb-{i}" for i in range(2000)]
    first = [
        engine.evaluate(make_event({"feedback": {"id": i}}), state=InMemoryState())[0].outcome for i in ids
    ]
    again = [
        engine.evaluate(make_event({"feedback": {"id": i}}), state=InMemoryState())[0].outcome for i in ids
    ]
    assert first == again
    kept = first.count(Outcome.MATCHED)
    assert 900 < kept < 1100  # ~50%
    assert set(first) == {Outcome.MATCHED, Outcome.SAMPLED_OUT}
    # The bucket is sha256("<policy>:<id>"), so another policy samples another subset.
    assert sample_bucket("half", "fb-1") != sample_bucket("other", "fb-1")
    out = next(i for i, o in zip(ids, first, strict=True) if o == Outcome.SAMPLED_OUT)
    decision = engine.evaluate(make_event({"feedback": {"id": out}}), state=InMemoryState())[0]
    assert decision.reason == f"sampled out: bucket {sample_bucket('half', out):.4f} >= sample 0.5"


def test_loop_guard_stops_a_policy_reacting_to_its_own_output() -> None:
    engine = CompiledPolicySet([policy("self", priority=1), policy("other")])
    decisions = engine.evaluate(make_event({"feedback": {"origin_policy": "self"}}), state=InMemoryState())
    assert outcomes(decisions) == [("self", "loop_guard"), ("other", "matched")]


def test_aggregate_threshold_and_group_key() -> None:
    agg = Aggregate(min_count=3, window="1h", group_by=("interaction.prompt_name", "feedback.thumb"))
    engine = CompiledPolicySet([policy("agg", aggregate=agg)])
    event = make_event({"feedback": {"id": "e1", "thumb": "down"}, "interaction": {"prompt_name": "p"}})
    state = InMemoryState({"e1": 2})
    [below] = engine.evaluate(event, state=state)
    assert below.outcome == Outcome.AGGREGATE_BELOW_THRESHOLD
    assert below.group_key == "interaction.prompt_name=p,feedback.thumb=down"
    assert below.reason == "2 similar signal(s) in 1h, needs 3 (similarity >= 0.8)"
    state.set_similar_count("e1", 3)
    [hit] = engine.evaluate(event, state=state)
    assert (hit.outcome, hit.group_key) == (Outcome.MATCHED, "interaction.prompt_name=p,feedback.thumb=down")


def test_cooldown_is_per_group_and_expires() -> None:
    agg = Aggregate(min_count=2, window="1h", group_by=("interaction.model_version",))
    engine = CompiledPolicySet([policy("cool", aggregate=agg, cooldown="30m")])
    state = InMemoryState(default_similar_count=2)

    def run(version: str, at: str) -> Outcome:
        event = make_event({"feedback": {"occurred_at": at}, "interaction": {"model_version": version}})
        return engine.evaluate(event, state=state)[0].outcome

    assert run("v1", "2024-01-01T10:00:00Z") == Outcome.MATCHED
    assert run("v1", "2024-01-01T10:29:00Z") == Outcome.COOLDOWN
    assert run("v2", "2024-01-01T10:29:00Z") == Outcome.MATCHED
    assert run("v1", "2024-01-01T10:30:00Z") == Outcome.MATCHED
    # The match at 10:30 started a new cooldown for v1.
    assert run("v1", "2024-01-01T10:59:00Z") == Outcome.COOLDOWN
    assert run("v1", "2024-01-01T11:00:00Z") == Outcome.MATCHED


def test_explicit_now_overrides_event_time() -> None:
    engine = CompiledPolicySet([policy("cool", cooldown="1h")])
    state = InMemoryState()
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    assert engine.evaluate(make_event(), state=state, now=t0)[0].outcome == Outcome.MATCHED
    assert engine.evaluate(make_event(), state=state, now=t0)[0].outcome == Outcome.COOLDOWN


def test_invalid_policy_is_refused_at_compile() -> None:
    with pytest.raises(PolicyCompileError, match=re.escape('unknown field "feedback.nope"')):
        CompiledPolicySet([policy("bad", "feedback.nope == 1")])


def test_make_event_rejects_unknown_fields() -> None:
    with pytest.raises(EventError, match="unknown field"):
        make_event({"feedback": {"thumbs": "down"}})
    event = make_event({"feedback": {"categories": ["a"]}})
    assert event["feedback"]["rating"] == 0 and event["interaction"]["input_messages"] == []
    event["feedback"]["categories"].append("b")  # defaults are not shared between events
    assert make_event()["feedback"]["categories"] == []


def test_event_missing_keys_still_evaluates_from_defaults() -> None:
    # The projection fills absent keys from the defaults, so a sparse dict is safe.
    engine = CompiledPolicySet([policy("c", 'feedback.comment == "" && session.turn_count == 0')])
    assert outcomes(engine.evaluate({"feedback": {}}, state=InMemoryState())) == [("c", "matched")]
