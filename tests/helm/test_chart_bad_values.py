"""Values the chart refuses, each with a message naming the path and what to do."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import pytest
from helm_python import HelmRenderError, HelmValuesError
from helm_support import CHART_DIR, VALUE_SETS, render_values

SECRETS = {
    "database": {"existingSecret": "pg", "secretKey": "url"},
    "milvus": {"existingSecret": "mv", "uriKey": "uri"},
}

# (values, exception, exact fragment of the message)
CASES: dict[str, tuple[dict[str, Any], type[Exception], str]] = {
    "standalone-two-replicas": (
        {"replicaCount": 2},
        HelmRenderError,
        "replicaCount: standalone mode runs exactly one replica (Milvus Lite holds a file lock on its data), "
        "got 2. Use mode: distributed with api.replicaCount and worker.replicaCount to scale out.",
    ),
    "distributed-without-database-secret": (
        {"mode": "distributed", "milvus": SECRETS["milvus"]},
        HelmRenderError,
        "database.existingSecret: distributed mode needs a Secret holding the PostgreSQL URL",
    ),
    "distributed-without-milvus-secret": (
        {"mode": "distributed", "database": SECRETS["database"]},
        HelmRenderError,
        "milvus.existingSecret: distributed mode needs a Secret holding the Milvus URI",
    ),
    "misspelled-top-level-key": (
        {"replicaCout": 1},
        HelmValuesError,
        "additional properties 'replicaCout' not allowed",
    ),
    "misspelled-nested-key": (
        {"api": {"replicas": 3}},
        HelmValuesError,
        "at '/api': additional properties 'replicas' not allowed",
    ),
    "misspelled-deep-key": (
        {"probes": {"startup": {"failureTreshold": 10}}},
        HelmValuesError,
        "at '/probes/startup': additional properties 'failureTreshold' not allowed",
    ),
    "wrong-type": (
        {"server": {"port": "50051"}},
        HelmValuesError,
        "at '/server/port': got string, want integer",
    ),
    "wrong-type-boolean": (
        {"persistence": {"enabled": "yes"}},
        HelmValuesError,
        "at '/persistence/enabled': got string, want boolean",
    ),
    "unknown-mode": (
        {"mode": "cluster"},
        HelmValuesError,
        "at '/mode': value must be one of 'standalone', 'distributed'",
    ),
    "service-monitor-without-metrics": (
        {"metrics": {"serviceMonitor": {"enabled": True}}},
        HelmRenderError,
        "metrics.serviceMonitor.enabled: needs metrics.enabled: true",
    ),
    "grpcroute-without-gateway": (
        {"grpcRoute": {"enabled": True}},
        HelmRenderError,
        "grpcRoute.parentRefs: a GRPCRoute needs at least one parent Gateway",
    ),
    "existing-claim-without-persistence": (
        {"persistence": {"enabled": False, "existingClaim": "x"}},
        HelmRenderError,
        "persistence.existingClaim: set persistence.enabled: true to use an existing claim",
    ),
    "policy-file-not-yaml": (
        {"policies": {"files": {"routing.txt": "x"}}},
        HelmValuesError,
        "invalid propertyName 'routing.txt'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_values_fail_with_a_clear_message(case: str) -> None:
    values, error, message = CASES[case]
    with pytest.raises(error, match=re.escape(message)):
        render_values(values)


def test_the_same_values_pass_when_corrected() -> None:
    """The failures above come from the values, not from a chart that never renders."""
    render_values({"replicaCount": 1})
    render_values({"mode": "distributed", **SECRETS})


def test_lint_reports_a_schema_error_with_its_path() -> None:
    report = helm_python.lint(CHART_DIR, {"api": {"replicas": 3}}, strict=True)
    errors = [m["error"] for m in report["messages"] if m["severity"] == 3]
    assert any("at '/api': additional properties 'replicas' not allowed" in e for e in errors)


@pytest.mark.parametrize("values_set", sorted(VALUE_SETS))
def test_every_tested_values_set_satisfies_the_schema(values_set: str) -> None:
    helm_python.Chart.load(CHART_DIR).validate_schema(VALUE_SETS[values_set])
