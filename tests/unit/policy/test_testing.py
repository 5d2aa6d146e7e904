from __future__ import annotations

import shutil
from pathlib import Path

from feedbackloop.policy.testing import run_tests

from .conftest import EXAMPLES


def test_example_policy_tests_pass_and_cover_every_policy() -> None:
    report = run_tests(EXAMPLES)
    assert report.passed, report.render()
    assert [c.name for c in report.cases] == [
        "corrections",
        "loop-guard",
        "outdated-info-aggregate",
        "thumbs-down-sampling",
        "unsafe-with-correction",
    ]
    text = "".join(p.read_text() for p in (EXAMPLES / "tests").glob("*/case.yaml"))
    for name in (
        "unsafe-to-safety-review",
        "corrections-to-dataset",
        "outdated-info-guideline",
        "thumbs-down-comment-review",
    ):
        assert f"policy: {name}\n        outcome: matched" in text, name
    assert "outcome: condition_false" in text  # at least one case shows a non-match reason


def _copy(tmp_path: Path) -> Path:
    dest = tmp_path / "policies"
    shutil.copytree(EXAMPLES, dest)
    return dest


def test_wrong_expectation_fails_with_a_readable_diff(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    case = root / "tests" / "thumbs-down-sampling" / "case.yaml"
    case.write_text(case.read_text().replace("outcome: sampled_out", "outcome: matched"))
    report = run_tests(root)
    assert not report.passed
    [failed] = [c for c in report.cases if not c.passed]
    assert failed.name == "thumbs-down-sampling"
    assert failed.failures == [
        "event [1] sampled out:\n"
        "--- expected\n"
        "+++ actual\n"
        "@@ -1 +1 @@\n"
        "-thumbs-down-comment-review: matched\n"
        "+thumbs-down-comment-review: sampled_out\n"
        "thumbs-down-comment-review: reason: sampled out: bucket 0.5733 >= sample 0.25"
    ]
    assert "FAIL  thumbs-down-sampling" in report.render()
    assert report.render().endswith("4 passed, 1 failed\n")


def test_unexpected_match_fails(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    case = root / "tests" / "x" / "case.yaml"
    case.parent.mkdir()
    case.write_text(
        "events:\n  - event: {feedback: {correction: fix}}\n    expect:\n"
        "      - {policy: unsafe-to-safety-review, outcome: condition_false}\n"
    )
    [result] = [c for c in run_tests(root).cases if c.name == "x"]
    assert result.failures == [
        "event [0]:\n--- expected\n+++ actual\n@@ -1 +1,2 @@\n unsafe-to-safety-review: condition_false\n"
        "+corrections-to-dataset: matched (not expected)"
    ]


def test_bad_case_file_and_invalid_policies_are_reported(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    case = root / "tests" / "bad" / "case.yaml"
    case.parent.mkdir()
    case.write_text(
        "events:\n  - event: {feedback: {thumbs: up}}\n    expect: []\n"
        "  - event: {}\n    expect: [{policy: nope, outcome: matched}]\n"
    )
    [result] = [c for c in run_tests(root).cases if c.name == "bad"]
    assert result.failures == [
        f"{case}:2:12: events[0].event: unknown field(s) in feedback: thumbs",
        f'{case}:5:23: events[1].expect[0].policy: unknown RoutingPolicy "nope"',
    ]
    (root / "broken.yaml").write_text("kind: [\n")
    report = run_tests(root)
    assert not report.passed and report.cases == []
    assert report.policy_errors[0].startswith(f"{root / 'broken.yaml'}:2:1: YAML syntax error")
