"""Render a PlanDiff: Terraform-style text for humans, JSON (with format_version) for tools."""

from __future__ import annotations

import json
from typing import Any

from feedbackloop.policy.differ import ABSENT, PlanDiff, Transition

JSON_FORMAT_VERSION = "1.0"

_SYMBOL = {Transition.CREATE: "+", Transition.UPDATE: "~", Transition.DELETE: "-"}
_LEGEND = {Transition.CREATE: "create", Transition.UPDATE: "update in-place", Transition.DELETE: "destroy"}
_VERB = {Transition.CREATE: "created", Transition.UPDATE: "updated in-place", Transition.DELETE: "destroyed"}
NO_CHANGES = "No changes. The live policy set matches the configuration."


def _value(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def render_text(plan: PlanDiff) -> str:
    if not plan.has_changes:
        return NO_CHANGES + "\n"
    changed = [r for r in plan.resources if r.transition != Transition.NO_OP]
    present = [
        t
        for t in (Transition.CREATE, Transition.UPDATE, Transition.DELETE)
        if any(r.transition == t for r in changed)
    ]
    lines = ["Resource actions are indicated with the following symbols:"]
    lines += [f"  {_SYMBOL[t]} {_LEGEND[t]}" for t in present]
    lines += ["", "feedbackloop will perform the following actions:", ""]
    for res in changed:
        sym = _SYMBOL[res.transition]
        lines.append(f"  # {res.address} will be {_VERB[res.transition]}")
        lines.append(f"  {sym} {res.address}")
        for ch in res.changes:
            if ch.old is ABSENT:
                lines.append(f"      + {ch.path}: {_value(ch.new)}")
            elif ch.new is ABSENT:
                lines.append(f"      - {ch.path}: {_value(ch.old)}")
            else:
                lines.append(f"      ~ {ch.path}: {_value(ch.old)} -> {_value(ch.new)}")
        lines.append("")
    lines.append(
        f"Plan: {plan.count(Transition.CREATE)} to add, {plan.count(Transition.UPDATE)} to change, "
        f"{plan.count(Transition.DELETE)} to destroy."
    )
    return "\n".join(lines) + "\n"


def render_json(plan: PlanDiff) -> str:
    """Machine-readable plan; absent values are omitted (`before`/`after` keys missing)."""
    out: dict[str, Any] = {
        "format_version": JSON_FORMAT_VERSION,
        "resource_changes": [
            {
                "address": r.address,
                "kind": r.kind,
                "name": r.name,
                "action": r.transition.value,
                "changes": [
                    {
                        "path": c.path,
                        **({"before": c.old} if c.old is not ABSENT else {}),
                        **({"after": c.new} if c.new is not ABSENT else {}),
                    }
                    for c in r.changes
                ],
            }
            for r in plan.resources
        ],
        "summary": {
            "add": plan.count(Transition.CREATE),
            "change": plan.count(Transition.UPDATE),
            "destroy": plan.count(Transition.DELETE),
        },
        "has_changes": plan.has_changes,
    }
    return json.dumps(out, ensure_ascii=False, sort_keys=True, indent=2) + "\n"
