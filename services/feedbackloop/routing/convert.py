"""Rows and policy objects to wire messages, and policy files from requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feedbackloop import fields
from feedbackloop.errors import InvalidArgument, Violations, quote
from feedbackloop.ingestion.convert import timestamp
from feedbackloop.policy import Decision, PolicyError, PolicySet
from feedbackloop.policy.validate import validate_texts
from feedbackloop.routing.revisions import RevisionInfo
from feedbackloop.store.routing_models import DecisionRecord
from feedbackloop.v1 import routing_pb2

REVISION_KINDS = {
    "apply": routing_pb2.REVISION_KIND_APPLY,
    "rollback": routing_pb2.REVISION_KIND_ROLLBACK,
    "bootstrap": routing_pb2.REVISION_KIND_BOOTSTRAP,
}
OUTCOMES = {
    "matched": routing_pb2.DECISION_OUTCOME_MATCHED,
    "condition_false": routing_pb2.DECISION_OUTCOME_CONDITION_FALSE,
    "sampled_out": routing_pb2.DECISION_OUTCOME_SAMPLED_OUT,
    "cooldown": routing_pb2.DECISION_OUTCOME_COOLDOWN,
    "aggregate_below_threshold": routing_pb2.DECISION_OUTCOME_AGGREGATE_BELOW_THRESHOLD,
    "loop_guard": routing_pb2.DECISION_OUTCOME_LOOP_GUARD,
    "error": routing_pb2.DECISION_OUTCOME_ERROR,
}
ACTION_STATUSES = {
    "created": routing_pb2.ACTION_STATUS_CREATED,
    "existing": routing_pb2.ACTION_STATUS_EXISTING,
    "skipped": routing_pb2.ACTION_STATUS_SKIPPED,
    "failed": routing_pb2.ACTION_STATUS_FAILED,
    "would_run": routing_pb2.ACTION_STATUS_WOULD_RUN,
}
MAX_FILES = 500
MAX_PATH_CHARS = 1024  # a path names a file in error messages (file:line:col)


def load_files(files: Sequence[routing_pb2.PolicyFile]) -> tuple[PolicySet | None, list[PolicyError]]:
    """Validate files sent as (path, content) pairs exactly as `validate_dir` would a directory."""
    v = Violations()
    if not files:
        v.add("files", "at least one policy file is required")
    if len(files) > MAX_FILES:
        v.add("files", f"has {len(files)} entries; the limit is {MAX_FILES}")
    seen: set[str] = set()
    for i, f in enumerate(files):
        if not f.path:
            v.add(f"files[{i}].path", "is required")
        elif f.path in seen:
            v.add(f"files[{i}].path", f'duplicate path "{quote(f.path)}"')
        else:
            fields.identifier(v, f"files[{i}].path", f.path, limit=MAX_PATH_CHARS)
        seen.add(f.path)
    v.raise_if_any()
    return validate_texts((f.path, f.content) for f in files)


def require_valid(files: Sequence[routing_pb2.PolicyFile]) -> PolicySet:
    """The set, or INVALID_ARGUMENT listing every error as `file:line:col: path: message`."""
    policy_set, errors = load_files(files)
    if policy_set is None:
        v = Violations()
        for e in errors:
            v.add(f"{e.file}:{e.line}:{e.column}", f"{e.path}: {e.message}" if e.path else e.message)
        v.raise_if_any()
        raise InvalidArgument.single("files", "invalid policy set")
    return policy_set


def problem(e: PolicyError) -> routing_pb2.PolicyProblem:
    return routing_pb2.PolicyProblem(
        file=e.file, line=e.line, column=e.column, path=e.path, message=e.message, text=str(e)
    )


def revision_to_proto(info: RevisionInfo) -> routing_pb2.PolicyRevision:
    return routing_pb2.PolicyRevision(
        revision=info.revision,
        content_hash=info.content_hash,
        applied_by=info.applied_by,
        applied_at=timestamp(info.applied_at),
        kind=REVISION_KINDS.get(info.kind, routing_pb2.REVISION_KIND_UNSPECIFIED),
        source_revision=info.source_revision,
        resource_count=info.resource_count,
        message=info.message,
    )


def action_result(r: dict[str, Any]) -> routing_pb2.ActionResult:
    return routing_pb2.ActionResult(
        index=r["index"],
        type=r["type"],
        target=r["target"],
        status=ACTION_STATUSES.get(r["status"], routing_pb2.ACTION_STATUS_UNSPECIFIED),
        resource_id=r.get("resource_id", ""),
        detail=r.get("detail", ""),
    )


def decision_to_proto(d: Decision, results: Sequence[dict[str, Any]] = ()) -> routing_pb2.PolicyDecision:
    return routing_pb2.PolicyDecision(
        policy=d.policy,
        outcome=OUTCOMES[d.outcome.value],
        reason=d.reason,
        group_key=d.group_key,
        actions=[action_result(r) for r in results],
    )


def record_to_proto(row: DecisionRecord) -> routing_pb2.DecisionRecord:
    return routing_pb2.DecisionRecord(
        feedback_id=row.feedback_id,
        revision=row.revision,
        decision=routing_pb2.PolicyDecision(
            policy=row.policy,
            outcome=OUTCOMES.get(row.outcome, routing_pb2.DECISION_OUTCOME_UNSPECIFIED),
            reason=row.reason,
            group_key=row.group_key,
            actions=[action_result(r) for r in row.actions or []],
        ),
        evaluated_at=timestamp(row.evaluated_at),
        trace_id=row.trace_id,
    )
