from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedbackloop.policy.model import PolicySet, allowed_categories
from feedbackloop.policy.validate import validate_dir

from .conftest import EXAMPLES

QUEUE = "apiVersion: feedbackloop/v1\nkind: ReviewQueue\nmetadata: {{name: q}}\nspec: {{{spec}}}\n"


def _load(tmp_path: Path, text: str) -> PolicySet:
    (tmp_path / "p.yaml").write_text(text)
    policy_set, errors = validate_dir(tmp_path)
    assert errors == []
    assert policy_set is not None
    return policy_set


def test_canonical_round_trip_rebuilds_an_equal_set() -> None:
    policy_set, _ = validate_dir(EXAMPLES)
    assert policy_set is not None
    canonical = json.loads(json.dumps(policy_set.to_canonical()))  # must survive real JSON
    rebuilt = PolicySet.from_canonical(canonical)
    assert rebuilt == policy_set
    assert rebuilt.content_hash() == policy_set.content_hash()
    assert [(r.kind, r.name) for r in rebuilt][:3] == [
        ("FeedbackSchema", "support"),
        ("Prompt", "support-answer"),
        ("Dataset", "support-corrections"),
    ]


def test_hash_ignores_omitted_defaults_and_layout(tmp_path: Path) -> None:
    a = _load(tmp_path, QUEUE.format(spec="sla: 24h"))
    b = _load(tmp_path, "# comment\n" + QUEUE.format(spec="sla: 24h, lease: 15m, reviews_required: 1"))
    c = _load(tmp_path, QUEUE.format(spec="sla: 48h"))
    assert a.content_hash() == b.content_hash()
    assert a.content_hash() != c.content_hash()
    assert len(a.content_hash()) == 64


def test_from_canonical_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unsupported canonical policy set"):
        PolicySet.from_canonical({"format": 99, "apiVersion": "feedbackloop/v1", "resources": []})


def test_allowed_categories_is_the_union_over_signals() -> None:
    policy_set, _ = validate_dir(EXAMPLES)
    assert policy_set is not None
    assert allowed_categories(policy_set.feedback_schema) == {
        "hallucination",
        "outdated_info",
        "wrong_tone",
        "unhelpful",
        "unsafe",
        "formatting",
        "accurate",
        "clear",
    }
    assert allowed_categories(None) == set()
