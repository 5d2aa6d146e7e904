"""Rendering the chart with a real Helm engine (Helm v4's Go library through helm-python-sdk).

Rendering costs about a second per values set, so each named set is rendered once per test
session (`rendered`), and every test reads the same objects.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "feedbackloop"
RELEASE = "fl"
NAMESPACE = "feedback"
FULLNAME = f"{RELEASE}-feedbackloop"

# Credentials a test can look for everywhere: they must only ever appear inside Secrets.
DATABASE_SECRET = "fl-postgres"
MILVUS_SECRET = "fl-milvus"

_SECRETS = {
    "database": {"existingSecret": DATABASE_SECRET, "secretKey": "url"},
    "milvus": {"existingSecret": MILVUS_SECRET, "uriKey": "uri", "tokenKey": "token"},
}

POLICY_FILES = {
    "feedback-schema.yaml": (
        "apiVersion: feedbackloop/v1\n"
        "kind: FeedbackSchema\n"
        "metadata:\n"
        "  name: support\n"
        "spec:\n"
        "  signals:\n"
        "    thumbs_down:\n"
        "      categories:\n"
        "        - name: outdated_info\n"
    ),
}

_EVERY_OPTION: dict[str, Any] = {
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "GRPC"},
        "hosts": [{"host": "feedback.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "feedback-tls", "hosts": ["feedback.example.com"]}],
    },
    "grpcRoute": {
        "enabled": True,
        "parentRefs": [{"name": "gateway", "namespace": "infra", "sectionName": "https"}],
        "hostnames": ["feedback.example.com"],
    },
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "llm-apps"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    },
    "metrics": {
        "enabled": True,
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "LLM"}},
    },
    "policies": {"files": POLICY_FILES},
    "otel": {
        "endpoint": "http://otel-collector:4317",
        "resourceAttributes": {"deployment.environment": "test"},
    },
    "server": {"settings": {"pipeline_lease_seconds": 90}},
}


def _example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART_DIR / "examples" / name).read_text())
    return loaded


def _merge(base: dict[str, Any], *overlays: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for overlay in overlays:
        for key, value in overlay.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = _merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged


_CONSOLE: dict[str, Any] = {
    "console": {
        "enabled": True,
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": [{"host": "console.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "console-tls", "hosts": ["console.example.com"]}],
        },
    },
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}],
    },
}

# Every values set the tests render: both shapes, each optional part on and off.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "standalone": {},
    "standalone-existing-claim": {"persistence": {"existingClaim": "feedback-data"}},
    "standalone-ephemeral": {"persistence": {"enabled": False}, "tests": {"enabled": False}},
    "standalone-every-option": _EVERY_OPTION,
    "standalone-console": _CONSOLE,
    "distributed-example": _example("distributed.yaml"),
    "distributed-console": _merge({"mode": "distributed"}, _SECRETS, _CONSOLE),
    "distributed-minimal": _merge(
        {"mode": "distributed"},
        _SECRETS,
        {
            "api": {"podDisruptionBudget": {"enabled": False}},
            "worker": {"podDisruptionBudget": {"enabled": False}},
            "topologySpread": {"enabled": False},
            "serviceAccount": {"create": False, "name": "feedback-runner"},
            "tests": {"enabled": False},
        },
    ),
    "distributed-every-option": _merge(
        {"mode": "distributed"},
        _SECRETS,
        _EVERY_OPTION,
        {
            "api": {"autoscaling": {"enabled": True}},
            "worker": {"autoscaling": {"enabled": True}},
            "auth": {"adminKey": {"existingSecret": "fl-admin", "secretKey": "key"}},
            "image": {"digest": "sha256:" + "ab" * 32},
        },
    ),
}


@dataclass(frozen=True)
class Rendered:
    """One rendering: the objects by kind and name, and NOTES.txt."""

    objects: tuple[dict[str, Any], ...]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: found {len(found)} among {self.names()}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(o["metadata"]["name"] == name for o in self.of_kind(kind))

    def names(self) -> list[str]:
        return [f"{o['kind']}/{o['metadata']['name']}" for o in self.objects]


@functools.cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def render_values(values: dict[str, Any]) -> Rendered:
    """Render as `helm install` would (offline: `lookup` finds nothing); raises HelmError."""
    manifests = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append(document)
    return Rendered(tuple(objects), notes)


@functools.cache
def _rendered_json(key: str) -> Rendered:
    return render_values(json.loads(key))


def rendered(name: str) -> Rendered:
    """The named values set, rendered once per session."""
    return _rendered_json(json.dumps(VALUE_SETS[name], sort_keys=True))


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a workload, a Job or a Pod."""
    spec: dict[str, Any] = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
    return spec


def pod_annotations(obj: dict[str, Any]) -> dict[str, str]:
    metadata = obj["metadata"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]
    annotations: dict[str, str] = metadata.get("annotations") or {}
    return annotations


def annotations(obj: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = obj["metadata"].get("annotations") or {}
    return found


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


WORKLOAD_KINDS = ("StatefulSet", "Deployment", "Job", "Pod")


def workloads(r: Rendered) -> list[dict[str, Any]]:
    return [o for o in r.objects if o["kind"] in WORKLOAD_KINDS]
