"""Diff two PolicySets as data (Feast's property diff): per resource a transition, per
field a path with old and new values. Rendering is renderer.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from feedbackloop.policy.model import PolicySet, Resource, resource_to_document
from feedbackloop.policy.schema import KINDS


class Transition(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NO_OP = "no-op"


class _Absent:
    """Marks a field that does not exist on one side (distinct from a null value)."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class FieldChange:
    path: str  # e.g. "spec.actions[0].human_review.priority"
    old: Any  # ABSENT when the field is new
    new: Any  # ABSENT when the field is removed


@dataclass(frozen=True)
class ResourceDiff:
    kind: str
    name: str
    transition: Transition
    changes: tuple[FieldChange, ...]

    @property
    def address(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class PlanDiff:
    resources: tuple[ResourceDiff, ...]

    def count(self, transition: Transition) -> int:
        return sum(r.transition == transition for r in self.resources)

    @property
    def has_changes(self) -> bool:
        return any(r.transition != Transition.NO_OP for r in self.resources)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf paths of a canonical document. Lists of scalars stay one leaf (`formats: [a, b]`
    reads better as one change); lists of mappings are indexed (`actions[0]...`)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for key in value:
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def _fields(res: Resource | None) -> dict[str, Any]:
    if res is None:
        return {}
    doc = resource_to_document(res)
    # kind/name are the resource's address, apiVersion is fixed: only metadata labels and spec
    # can change in place.
    meta = {k: v for k, v in doc["metadata"].items() if k != "name"}
    return flatten({"metadata": meta, "spec": doc["spec"]} if meta else {"spec": doc["spec"]})


def diff_resources(old: Resource | None, new: Resource | None) -> ResourceDiff:
    some = new if new is not None else old
    assert some is not None
    before, after = _fields(old), _fields(new)
    changes = []
    for path in list(dict.fromkeys([*before, *after])):
        o, n = before.get(path, ABSENT), after.get(path, ABSENT)
        if o != n or type(o) is not type(n):
            changes.append(FieldChange(path, o, n))
    if old is None:
        transition = Transition.CREATE
    elif new is None:
        transition = Transition.DELETE
    else:
        transition = Transition.UPDATE if changes else Transition.NO_OP
    return ResourceDiff(some.kind, some.name, transition, tuple(changes))


def diff_policy_sets(old: PolicySet | None, new: PolicySet) -> PlanDiff:
    """Diff the live set (None when nothing is applied yet) against the configuration.

    Resources come out in canonical order (kind, then name) so the plan is stable.
    """
    old_by = {(r.kind, r.name): r for r in (old.resources if old else ())}
    new_by = {(r.kind, r.name): r for r in new.resources}
    keys = sorted(old_by.keys() | new_by.keys(), key=lambda k: (KINDS.index(k[0]), k[1]))
    return PlanDiff(tuple(diff_resources(old_by.get(k), new_by.get(k)) for k in keys))
