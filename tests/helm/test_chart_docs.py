"""values.yaml, values.schema.json and the chart README describe the same values."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from helm_support import CHART_DIR

VALUES_TEXT = (CHART_DIR / "values.yaml").read_text()
VALUES: dict[str, Any] = yaml.safe_load(VALUES_TEXT)
SCHEMA: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
README = (CHART_DIR / "README.md").read_text()
PARAMS = dict(re.findall(r"^\s*## @param (\S+) (.+)$", VALUES_TEXT, re.M))


def _leaves(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Documented values: a key with an @param, or a mapping whose keys are documented."""
    found: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if path in PARAMS or not isinstance(value, dict):
            found[path] = value
        else:
            found.update(_leaves(value, path + "."))
    return found


def _schema_at(path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
    return node


def test_every_value_has_a_param_comment() -> None:
    assert sorted(set(_leaves(VALUES)) - set(PARAMS)) == []
    assert sorted(set(PARAMS) - set(_leaves(VALUES))) == []


def test_the_schema_carries_each_param_with_its_description_and_default() -> None:
    for path, value in _leaves(VALUES).items():
        node = _schema_at(path)
        assert node["description"] == PARAMS[path], path
        assert node["default"] == value, path


def test_the_schema_refuses_unknown_keys_at_every_level() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, path or "(top)"
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}" if path else key)

    walk(SCHEMA, "")


def test_the_readme_documents_every_value() -> None:
    rows = dict(re.findall(r"^\| `([^`]+)` \| `[^|]*` \| (.+) \|$", README, re.M))
    assert sorted(set(PARAMS) - set(rows)) == []
    for path, description in PARAMS.items():
        assert rows[path] == description.replace("|", "\\|"), path


def test_the_readme_names_the_milvus_chart_and_both_installs() -> None:
    assert "milvus-helm" in README
    assert (
        "helm install feedbackloop ./helm/feedbackloop -f helm/feedbackloop/examples/distributed.yaml"
        in README
    )
