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


def schema_categories(canonical_json: str) -> list[Category]:
    """Every category of the FeedbackSchema resources in a canonical policy set, in the order
    written, each once (with the signals that allow it); [] when none is applied."""
    if not canonical_json:
        return []
    try:
        data: dict[str, Any] = json.loads(canonical_json)
    except ValueError:
        return []
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
