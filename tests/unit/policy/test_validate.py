from __future__ import annotations

import re
from pathlib import Path

import pytest

from feedbackloop.policy.model import Dataset, HumanReview, ReviewQueue, RoutingPolicy
from feedbackloop.policy.validate import validate_dir

from .conftest import BAD

BAD_CASES = sorted(BAD.glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: (.*)$", re.MULTILINE)


def test_every_required_bad_case_exists() -> None:
    names = {p.stem for p in BAD_CASES}
    required = {
        "yaml_syntax",
        "unknown_kind",
        "unknown_field",
        "cel_syntax",
        "cel_unknown_field",
        "cel_type_error",
        "missing_reference",
        "negative_window",
        "duplicate_names",
        "bad_duration",
    }
    assert required <= names


@pytest.mark.parametrize("case", BAD_CASES, ids=[p.stem for p in BAD_CASES])
def test_bad_policy_reports_exact_errors(case: Path, at_repo_root: Path) -> None:
    rel = case.relative_to(at_repo_root).as_posix()
    expected = [f"{rel}:{line}" for line in _EXPECT.findall(case.read_text())]
    assert expected, f"{case.name} has no '# expect:' lines"
    policy_set, errors = validate_dir(rel)
    assert policy_set is None
    assert [str(e) for e in errors] == expected


def test_example_set_is_valid_and_keeps_source_positions(at_repo_root: Path) -> None:
    policy_set, errors = validate_dir("policies")
    assert errors == []
    assert policy_set is not None
    queue = policy_set.get("ReviewQueue", "safety-review")
    assert isinstance(queue, ReviewQueue)
    assert queue.source == "policies/review-queues.yaml:10:1"
    assert (queue.sla_seconds, queue.lease_seconds, queue.reviews_required) == (4 * 3600, 900, 2)
    unsafe = policy_set.routing_policies["unsafe-to-safety-review"]
    assert unsafe.continue_ is True and unsafe.priority == 100
    assert unsafe.actions == (HumanReview(queue="safety-review", priority=95, due="4h"),)
    dataset = policy_set.datasets["support-corrections"]
    assert dataset == Dataset(
        "support-corrections",
        ("openai_chat", "plain"),
        0.95,
        "User-corrected answers, for fine-tuning and regression evals.",
    )


def test_defaults_are_filled(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: feedbackloop/v1\nkind: ReviewQueue\nmetadata: {name: q}\nspec: {sla: 1h}\n---\n"
        "apiVersion: feedbackloop/v1\nkind: RoutingPolicy\nmetadata: {name: r}\n"
        "spec:\n  when: 'true'\n  actions: [{human_review: {queue: q}}]\n"
    )
    policy_set, errors = validate_dir(tmp_path)
    assert errors == []
    assert policy_set is not None
    assert policy_set.review_queues["q"] == ReviewQueue("q", sla="1h", lease="15m", reviews_required=1)
    policy = policy_set.routing_policies["r"]
    assert policy == RoutingPolicy("r", "true", (HumanReview("q", 50, ""),), None, 1.0, "", 0, False)


def test_errors_from_several_files_are_all_collected_in_file_order(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: feedbackloop/v1\nkind: Nope\nmetadata: {name: a}\nspec: {}\n"
    )
    (tmp_path / "b.yaml").write_text("x: [\n")
    _, errors = validate_dir(tmp_path)
    assert [(Path(e.file).name, e.line) for e in errors] == [("a.yaml", 2), ("b.yaml", 2)]


def test_non_mapping_document_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("- just\n- a list\n")
    _, errors = validate_dir(tmp_path)
    assert [e.message for e in errors] == [
        "a policy document must be a mapping with apiVersion, kind, metadata, spec"
    ]
