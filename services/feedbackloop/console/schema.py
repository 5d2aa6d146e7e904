"""The applied FeedbackSchema's categories, read from the live policy revision."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    signals: tuple[str, ...]


def parse_policy_set(canonical_json: str) -> dict[str, Any]:
    """A revision's canonical JSON as a dict; {} when empty or not JSON."""
    if not canonical_json:
        return {}
    try:
        data = json.loads(canonical_json)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def schema_categories(canonical_json: str) -> list[Category]:
    """Every category of the FeedbackSchema resources in a canonical policy set, in the order
    written, each once (with the signals that allow it); [] when none is applied."""
    return categories_of(parse_policy_set(canonical_json))


def categories_of(data: dict[str, Any]) -> list[Category]:
    """`schema_categories` of a policy set already parsed."""
    found: dict[str, tuple[str, list[str]]] = {}
    for resource in data.get("resources", []):
        if resource.get("kind") != "FeedbackSchema":
            continue
        for signal, spec in (resource.get("spec", {}).get("signals") or {}).items():
            for category in spec.get("categories", []):
                name = str(category.get("name", ""))
                if not name:
                    continue
                _description, signals = found.setdefault(name, (str(category.get("description", "")), []))
                if signal not in signals:
                    signals.append(signal)
    return [Category(name, description, tuple(signals)) for name, (description, signals) in found.items()]
