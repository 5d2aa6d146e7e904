"""Offline policy engine: load, validate, diff and evaluate feedbackloop/v1 policy files.

The public surface the services use is re-exported here.
"""

from feedbackloop.policy.differ import PlanDiff, diff_policy_sets
from feedbackloop.policy.engine import (
    CompiledPolicySet,
    Decision,
    EvaluationState,
    InMemoryState,
    Outcome,
    sample_bucket,
)
from feedbackloop.policy.errors import PolicyError
from feedbackloop.policy.event import make_event
from feedbackloop.policy.model import PolicySet, allowed_categories
from feedbackloop.policy.renderer import render_json, render_text
from feedbackloop.policy.testing import TestReport, run_tests
from feedbackloop.policy.validate import validate_dir

__all__ = [
    "CompiledPolicySet",
    "Decision",
    "EvaluationState",
    "InMemoryState",
    "Outcome",
    "PlanDiff",
    "PolicyError",
    "PolicySet",
    "TestReport",
    "allowed_categories",
    "diff_policy_sets",
    "make_event",
    "render_json",
    "render_text",
    "run_tests",
    "sample_bucket",
    "validate_dir",
]
