"""Offline policy unit tests (like `amtool config routes test` / `kyverno test`).

Layout: `<policies dir>/tests/<case>/case.yaml`:

    description: what this case shows
    events:
      - name: unsafe answer with a correction
        similar_count: 1            # optional; what Recall would count (aggregates)
        event:                      # partial event, merged over the defaults
          feedback: {id: fb-1, thumb: down, categories: [unsafe], correction: "..."}
        expect:
          - policy: unsafe-to-safety-review
            outcome: matched
            actions: [{human_review: {queue: safety-review, priority: 95, due: 4h}}]
          - policy: corrections-to-dataset
            outcome: matched

Each listed policy must get that outcome (`not_evaluated` = evaluation stopped before it);
`actions`, when given, must equal the matched actions exactly; `reason_contains` checks the
reason text. A policy that matches without being listed fails the case, so a new policy
that starts firing on an old case is noticed. Events of one case share one InMemoryState,
so cooldowns carry from one event to the next (time is feedback.occurred_at).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from feedbackloop.policy.engine import CompiledPolicySet, Decision, InMemoryState, Outcome
from feedbackloop.policy.event import EventError, make_event
from feedbackloop.policy.loader import load_text
from feedbackloop.policy.validate import validate_dir

NOT_EVALUATED = "not_evaluated"
_OUTCOMES = {o.value for o in Outcome} | {NOT_EVALUATED}
_CASE_KEYS = {"description", "events"}
_EVENT_KEYS = {"name", "event", "similar_count", "expect"}
_EXPECT_KEYS = {"policy", "outcome", "actions", "reason_contains"}


@dataclass
class CaseResult:
    name: str
    file: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class TestReport:
    __test__ = False  # not a pytest test class despite the name

    cases: list[CaseResult] = field(default_factory=list)
    policy_errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.policy_errors and bool(self.cases) and all(c.passed for c in self.cases)

    def render(self) -> str:
        lines = [f"policy error: {e}" for e in self.policy_errors]
        for case in self.cases:
            lines.append(f"{'PASS' if case.passed else 'FAIL'}  {case.name}")
            for failure in case.failures:
                lines.extend("    " + line for line in failure.splitlines())
        failed = sum(not c.passed for c in self.cases)
        if not self.cases and not self.policy_errors:
            lines.append("no test cases found (expected tests/<case>/case.yaml)")
        lines.append(f"{len(self.cases) - failed} passed, {failed} failed")
        return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    """YAML turns unquoted timestamps into datetimes; events carry RFC 3339 strings."""
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _line(d: Decision) -> str:
    return f"{d.policy}: {d.outcome.value}"


def _check_event(
    compiled: CompiledPolicySet, state: InMemoryState, spec: dict[str, Any], label: str
) -> list[str]:
    decisions = compiled.evaluate(spec["event"], state=state)
    by_policy = {d.policy: d for d in decisions}
    expected_lines: list[str] = []
    actual_lines: list[str] = []
    problems: list[str] = []
    listed: set[str] = set()
    for exp in spec["expect"]:
        name, outcome = exp["policy"], exp["outcome"]
        listed.add(name)
        got = by_policy.get(name)
        expected_lines.append(f"{name}: {outcome}")
        actual_lines.append(_line(got) if got else f"{name}: {NOT_EVALUATED}")
        if got is None or got.outcome != outcome:
            if got is not None:
                problems.append(f"{name}: reason: {got.reason}")
            continue
        if "actions" in exp:
            want = exp["actions"] or []
            have = [a.to_dict() for a in got.actions]
            expected_lines += [f"  action {json.dumps(a, sort_keys=True)}" for a in want]
            actual_lines += [f"  action {json.dumps(a, sort_keys=True)}" for a in have]
        if "reason_contains" in exp and exp["reason_contains"] not in got.reason:
            expected_lines.append(f"  reason contains {exp['reason_contains']!r}")
            actual_lines.append(f"  reason {got.reason!r}")
    for d in decisions:
        if d.outcome == Outcome.MATCHED and d.policy not in listed:
            actual_lines.append(f"{_line(d)} (not expected)")
    if expected_lines == actual_lines:
        return []
    diff = "\n".join(
        difflib.unified_diff(expected_lines, actual_lines, "expected", "actual", lineterm="", n=99)
    )
    return [f"event {label}:\n{diff}" + ("\n" + "\n".join(problems) if problems else "")]


def _unknown_keys(data: Any, allowed: set[str]) -> list[str]:
    return sorted(set(data) - allowed) if isinstance(data, dict) else []


def run_case(case_file: Path, compiled: CompiledPolicySet, policy_names: set[str]) -> CaseResult:
    result = CaseResult(name=case_file.parent.name, file=str(case_file))
    docs, errors = load_text(case_file.read_text(encoding="utf-8"), str(case_file))
    if errors:
        result.failures += [str(e) for e in errors]
        return result
    if len(docs) != 1 or not isinstance(docs[0].data, dict):
        result.failures.append(f"{case_file}: expected one mapping with description and events")
        return result
    doc = docs[0]
    bad = _unknown_keys(doc.data, _CASE_KEYS)
    events = doc.data.get("events")
    if bad or not isinstance(events, list) or not events:
        result.failures.append(str(doc.error((), f"need a non-empty `events` list; unknown keys: {bad}")))
        return result
    state = InMemoryState()
    for i, raw in enumerate(events):
        where = ("events", i)
        if (
            not isinstance(raw, dict)
            or _unknown_keys(raw, _EVENT_KEYS)
            or not isinstance(raw.get("expect"), list)
        ):
            msg = f"each event needs `event` and an `expect` list; allowed keys: {sorted(_EVENT_KEYS)}"
            result.failures.append(str(doc.error(where, msg)))
            continue
        label = f"[{i}] {raw.get('name', '')}".rstrip()
        partial = _jsonable(raw.get("event") or {})
        partial.setdefault("feedback", {}).setdefault("id", f"{result.name}-{i}")
        try:
            event = make_event(partial)
        except EventError as exc:
            result.failures.append(str(doc.error((*where, "event"), str(exc))))
            continue
        bad_expect = False
        for j, exp in enumerate(raw["expect"]):
            if not isinstance(exp, dict) or _unknown_keys(exp, _EXPECT_KEYS) or "policy" not in exp:
                msg = f"expect entries need policy and outcome; allowed keys: {sorted(_EXPECT_KEYS)}"
                result.failures.append(str(doc.error((*where, "expect", j), msg)))
                bad_expect = True
            elif exp.get("outcome") not in _OUTCOMES:
                msg = f"unknown outcome {exp.get('outcome')!r} (expected one of: {', '.join(sorted(_OUTCOMES))})"
                result.failures.append(str(doc.error((*where, "expect", j, "outcome"), msg)))
                bad_expect = True
            elif exp["policy"] not in policy_names:
                msg = f'unknown RoutingPolicy "{exp["policy"]}"'
                result.failures.append(str(doc.error((*where, "expect", j, "policy"), msg)))
                bad_expect = True
        if bad_expect:
            continue
        if "similar_count" in raw:
            state.set_similar_count(event["feedback"]["id"], int(raw["similar_count"]))
        spec = {"event": event, "expect": raw["expect"]}
        result.failures += _check_event(compiled, state, spec, label)
    return result


def run_tests(policies_dir: Path | str) -> TestReport:
    """Validate the policies under `policies_dir`, then run every tests/<case>/case.yaml."""
    root = Path(policies_dir)
    policy_set, errors = validate_dir(root)
    if policy_set is None:
        return TestReport(policy_errors=[str(e) for e in errors])
    compiled = CompiledPolicySet.from_policy_set(policy_set)
    names = set(policy_set.routing_policies)
    report = TestReport()
    for case_file in sorted((root / "tests").glob("*/case.y*ml")):
        report.cases.append(run_case(case_file, compiled, names))
    return report
