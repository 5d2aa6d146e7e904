"""`validate_dir`: load, schema-check, compile and cross-check a policy directory.

Every check runs and every error is collected (Kyverno's field.ErrorList habit): a policy
author fixes a whole file in one pass instead of one error per run. Nothing is built unless
the whole set is clean, so a file with an error can never be half-applied.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from feedbackloop.policy.celcheck import check_condition
from feedbackloop.policy.cost import POLICY_SET_COST_LIMIT
from feedbackloop.policy.durations import DurationError, parse_positive_duration
from feedbackloop.policy.errors import PolicyError
from feedbackloop.policy.event import EVENT_DEFAULTS
from feedbackloop.policy.loader import Document, Mark, load_path, load_text, set_size_error
from feedbackloop.policy.model import PLACEHOLDER, PolicySet, Resource, resource_from_document
from feedbackloop.policy.schema import validate_document

# Where each action refers to another resource: action key -> (field, referenced kind).
_REFERENCES = {
    "prompt_patch": ("prompt", "Prompt"),
    "dataset_add": ("dataset", "Dataset"),
    "human_review": ("queue", "ReviewQueue"),
}


def _durations(doc: Document) -> list[PolicyError]:
    """Positive-duration checks (the schema only checks the shape of the string)."""
    spec = doc.data.get("spec") or {}
    candidates: list[tuple[tuple[str | int, ...], Any]] = []
    kind = doc.data.get("kind")
    if kind == "ReviewQueue":
        candidates += [(("spec", k), spec.get(k)) for k in ("sla", "lease")]
    if kind == "RoutingPolicy":
        candidates.append((("spec", "cooldown"), spec.get("cooldown")))
        agg = spec.get("aggregate") or {}
        candidates.append((("spec", "aggregate", "window"), agg.get("window")))
        for i, action in enumerate(spec.get("actions") or []):
            review = action.get("human_review") if isinstance(action, dict) else None
            if isinstance(review, dict):
                candidates.append((("spec", "actions", i, "human_review", "due"), review.get("due")))
    errors = []
    for path, value in candidates:
        if not isinstance(value, str):
            continue  # missing, or a wrong type the schema already reports
        try:
            parse_positive_duration(value)
        except DurationError as exc:
            errors.append(doc.error(path, str(exc)))
    return errors


def _prompt_checks(doc: Document) -> list[PolicyError]:
    spec = doc.data["spec"]
    used = PLACEHOLDER.findall(spec["template"])
    declared: list[str] = spec["variables"]
    errors = []
    for i, name in enumerate(declared):
        if name in declared[:i]:
            errors.append(doc.error(("spec", "variables", i), f'duplicate variable "{name}"'))
        elif name not in used:
            errors.append(
                doc.error(("spec", "variables", i), f'variable "{name}" is not used in spec.template')
            )
    for name in dict.fromkeys(used):
        if name not in declared:
            errors.append(
                doc.error(
                    ("spec", "template"), f'placeholder "{{{{{name}}}}}" is not declared in spec.variables'
                )
            )
    return errors


def _schema_checks(doc: Document) -> list[PolicyError]:
    spec = doc.data["spec"]
    errors = []
    for signal, body in spec["signals"].items():
        seen: set[str] = set()
        for i, cat in enumerate(body["categories"]):
            if cat["name"] in seen:
                path = ("spec", "signals", signal, "categories", i, "name")
                errors.append(doc.error(path, f'duplicate category "{cat["name"]}"'))
            seen.add(cat["name"])
    return errors


def _routing_checks(doc: Document) -> tuple[list[PolicyError], int]:
    """The policy's errors and the estimated cost of its condition (for the set's budget)."""
    spec = doc.data["spec"]
    errors: list[PolicyError] = []
    checked = check_condition(spec["when"])
    errors += [doc.error(("spec", "when"), p) for p in checked.problems]
    for i, action in enumerate(spec["actions"]):
        patch = action.get("prompt_patch")
        if not isinstance(patch, dict):
            continue
        path = ("spec", "actions", i, "prompt_patch")
        if patch["strategy"] == "generator":
            if "generator" not in patch:
                errors.append(doc.error(path, 'strategy "generator" requires generator.target'))
        else:
            if "generator" in patch:
                errors.append(
                    doc.error(
                        (*path, "generator"), 'generator is only allowed with strategy "generator"', key=True
                    )
                )
            if "template" not in patch:
                errors.append(doc.error(path, f'strategy "{patch["strategy"]}" requires a template'))
    for i, field_path in enumerate((spec.get("aggregate") or {}).get("group_by", [])):
        var, _, name = field_path.partition(".")
        if name not in EVENT_DEFAULTS[var]:
            errors.append(doc.error(("spec", "aggregate", "group_by", i), f'unknown field "{field_path}"'))
    # An over-limit condition is already an error; the budget sums the conditions that pass.
    return errors, 0 if checked.problems else checked.cost


def _budget_check(costs: list[tuple[Document, int]]) -> list[PolicyError]:
    """The per-set budget: what routing one event may cost, summed over its policies.

    Reported once, at the policy (in file order) whose condition takes the sum over it.
    """
    total = 0
    for doc, cost in costs:
        total += cost
        if total > POLICY_SET_COST_LIMIT:
            overall = sum(c for _, c in costs)
            return [
                doc.error(
                    ("spec", "when"),
                    f"the routing policies' estimated cost {overall:,} exceeds the policy-set "
                    f"budget of {POLICY_SET_COST_LIMIT:,} (the sum passes it at this policy, "
                    f"whose condition costs {cost:,})",
                )
            ]
    return []


def _is_wellformed(doc: Document) -> bool:
    data = doc.data
    return (
        isinstance(data, dict)
        and isinstance(data.get("metadata"), dict)
        and isinstance(data.get("kind"), str)
    )


def validate_documents(docs: list[Document]) -> tuple[PolicySet | None, list[PolicyError]]:
    errors: list[PolicyError] = []
    valid: list[Document] = []
    # (kind, name) -> where first defined; used for duplicates and reference checks.
    defined: dict[tuple[str, str], tuple[Document, Mark]] = {}
    costs: list[tuple[Document, int]] = []
    for doc in docs:
        if not isinstance(doc.data, dict):
            errors.append(
                doc.error((), "a policy document must be a mapping with apiVersion, kind, metadata, spec")
            )
            continue
        schema_errors = [doc.error(path, msg, key=key) for path, msg, key in validate_document(doc.data)]
        errors += schema_errors
        if _is_wellformed(doc) and isinstance(doc.data["metadata"].get("name"), str):
            key = (doc.data["kind"], doc.data["metadata"]["name"])
            mark = doc.mark(("metadata", "name"))
            if key in defined:
                first_doc, first = defined[key]
                errors.append(
                    doc.error(
                        ("metadata", "name"),
                        f'duplicate {key[0]} "{key[1]}" (first defined at {first_doc.file}:{first.line}:{first.column})',
                    )
                )
            else:
                defined[key] = (doc, mark)
        # Semantic checks need the shape the schema guarantees, so they only run on valid docs;
        # durations are shape-independent and run anyway (a bad window should show up at once).
        errors += _durations(doc)
        if schema_errors:
            continue
        kind = doc.data["kind"]
        if kind == "Prompt":
            errors += _prompt_checks(doc)
        elif kind == "FeedbackSchema":
            errors += _schema_checks(doc)
        elif kind == "RoutingPolicy":
            routing_errors, cost = _routing_checks(doc)
            errors += routing_errors
            costs.append((doc, cost))
        valid.append(doc)
    errors += _budget_check(costs)

    schemas = [k for k in defined if k[0] == "FeedbackSchema"]
    for key in schemas[1:]:
        doc, _ = defined[key]
        errors.append(
            doc.error(
                ("metadata", "name"),
                f'at most one FeedbackSchema is allowed (already have "{schemas[0][1]}")',
            )
        )

    for doc in valid:
        if doc.data["kind"] != "RoutingPolicy":
            continue
        for i, action in enumerate(doc.data["spec"]["actions"]):
            ((action_key, body),) = action.items()
            field, kind = _REFERENCES[action_key]
            if (kind, body[field]) not in defined:
                path = ("spec", "actions", i, action_key, field)
                errors.append(doc.error(path, f'unknown {kind} "{body[field]}"'))

    # Dedup (a duration can be reported by both the schema and _durations only if both fire
    # on the same text; keep one) and sort by file and position.
    unique = sorted(set(errors))
    if unique:
        return None, unique
    resources: list[Resource] = []
    for doc in valid:
        m = doc.mark(())
        resources.append(resource_from_document(doc.data, source=f"{doc.file}:{m.line}:{m.column}"))
    return PolicySet(tuple(resources)), []


def validate_dir(path: Path | str) -> tuple[PolicySet | None, list[PolicyError]]:
    """Validate every policy file under `path` (or one file); the set only if error-free."""
    return _validated(*load_path(path))


def validate_texts(files: Iterable[tuple[str, str]]) -> tuple[PolicySet | None, list[PolicyError]]:
    """The same for files given as (path, content) pairs, such as files sent over gRPC."""
    docs: list[Document] = []
    errors: list[PolicyError] = []
    ordered = sorted(files)
    over = set_size_error(
        [(path, len(content.encode("utf-8", "surrogatepass"))) for path, content in ordered]
    )
    if over is not None:
        return None, [over]
    for path, content in ordered:
        file_docs, file_errors = load_text(content, path)
        docs += file_docs
        errors += file_errors
    return _validated(docs, errors)


def _validated(
    docs: list[Document], load_errors: list[PolicyError]
) -> tuple[PolicySet | None, list[PolicyError]]:
    policy_set, more = validate_documents(docs)
    all_errors = sorted(set(load_errors + more))
    return (policy_set if not all_errors else None), all_errors
