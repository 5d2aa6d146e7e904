"""The chart's web console switch: off by default; beside the API in the standalone pod; its own
one-replica Deployment and Service in distributed mode; an optional Ingress and NetworkPolicy.

Every values set here is also linted strictly and validated against Kubernetes' schemas by
test_chart_render.py (VALUE_SETS).
"""

from __future__ import annotations

from typing import Any

import pytest
from helm_python import HelmRenderError
from helm_support import FULLNAME, NAMESPACE, containers, env_of, pod_spec, render_values, rendered

CONSOLE = f"{FULLNAME}-console"


def _settings(values_set: str) -> dict[str, str]:
    data: dict[str, str] = rendered(values_set).get("ConfigMap", f"{FULLNAME}-settings")["data"]
    return data


def _port(container: dict[str, Any], name: str) -> int | None:
    return next((p["containerPort"] for p in container.get("ports", []) if p["name"] == name), None)


def _service_ports(service: dict[str, Any]) -> dict[str, tuple[int, str]]:
    return {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}


@pytest.mark.parametrize("values_set", ["standalone", "distributed-example"])
def test_the_console_is_off_by_default(values_set: str) -> None:
    r = rendered(values_set)
    assert _settings(values_set)["FEEDBACKLOOP_CONSOLE"] == "off"
    assert "FEEDBACKLOOP_CONSOLE_SECURE_COOKIES" not in _settings(values_set)
    assert (
        not r.has("Deployment", CONSOLE) and not r.has("Service", CONSOLE) and not r.has("Ingress", CONSOLE)
    )
    for workload in r.of_kind("StatefulSet") + r.of_kind("Deployment"):
        for container in containers(workload):
            assert _port(container, "console") is None
    assert "console" not in _service_ports(r.get("Service", FULLNAME))


def test_standalone_serves_the_console_in_its_pod_and_on_its_service() -> None:
    r = rendered("standalone-console")
    assert _settings("standalone-console")["FEEDBACKLOOP_CONSOLE"] == "on"
    assert _settings("standalone-console")["FEEDBACKLOOP_CONSOLE_PORT"] == "50080"
    # Its Ingress has TLS: the cookies are Secure.
    assert _settings("standalone-console")["FEEDBACKLOOP_CONSOLE_SECURE_COOKIES"] == "true"
    server = next(
        c for c in pod_spec(r.get("StatefulSet", FULLNAME))["containers"] if c["name"] == "feedbackloop"
    )
    assert _port(server, "console") == 50080
    assert _service_ports(r.get("Service", FULLNAME))["console"] == (50080, "console")
    # The headless Service is for gRPC clients only.
    assert "console" not in _service_ports(r.get("Service", f"{FULLNAME}-headless"))
    assert not r.has("Deployment", CONSOLE)
    backend = r.get("Ingress", CONSOLE)["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "console"}}


def test_a_standalone_network_policy_opens_the_console_port_to_the_listed_peers() -> None:
    policy = rendered("standalone-console").get("NetworkPolicy", f"{FULLNAME}-standalone")
    rules = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert rules["console"]["from"] == [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]


def test_distributed_runs_one_console_replica_as_a_client_of_the_api_service() -> None:
    r = rendered("distributed-console")
    # The api pods do not serve it themselves.
    assert _settings("distributed-console")["FEEDBACKLOOP_CONSOLE"] == "off"
    deployment = r.get("Deployment", CONSOLE)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = pod_spec(deployment)["containers"]
    assert container["args"] == [
        "console",
        "--server",
        f"{FULLNAME}.{NAMESPACE}.svc:50051",
        "--host",
        "0.0.0.0",
        "--port",
        "50080",
        "--secure-cookies",  # the Ingress has TLS
    ]
    assert _port(container, "console") == 50080
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "console"}
    # It holds no credentials: no database or Milvus Secret, no admin key.
    assert not [e for e in env_of(container).values() if "valueFrom" in e]
    assert "envFrom" not in container
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = r.get("Service", CONSOLE)
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "console"
    assert _service_ports(service) == {"console": (50080, "console")}
    # The api Services never select the console pod.
    assert r.get("Service", FULLNAME)["spec"]["selector"]["app.kubernetes.io/component"] == "api"

    ingress = r.get("Ingress", CONSOLE)
    assert ingress["spec"]["tls"] == [{"secretName": "console-tls", "hosts": ["console.example.com"]}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": CONSOLE, "port": {"name": "console"}}

    policy = r.get("NetworkPolicy", CONSOLE)
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "console"
    assert [rule["ports"][0]["port"] for rule in policy["spec"]["ingress"]] == ["console"]
    # The console reaches the api's gRPC port as one of the chart's own pods.
    api_rule = r.get("NetworkPolicy", f"{FULLNAME}-api")["spec"]["ingress"][0]
    own = {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "feedbackloop", "app.kubernetes.io/instance": "fl"}
        }
    }
    assert own in api_rule["from"]
    assert own["podSelector"]["matchLabels"].items() <= labels.items()
    assert "port-forward --namespace feedback svc/fl-feedbackloop-console 50080:50080" in r.notes


def test_a_standalone_console_without_tls_does_not_mark_cookies_secure() -> None:
    settings = render_values({"console": {"enabled": True, "ingress": {"enabled": True}}}).get(
        "ConfigMap", f"{FULLNAME}-settings"
    )["data"]
    assert settings["FEEDBACKLOOP_CONSOLE"] == "on"
    assert "FEEDBACKLOOP_CONSOLE_SECURE_COOKIES" not in settings


def test_without_tls_the_cookie_is_not_marked_secure() -> None:
    r = render_values(
        {
            "mode": "distributed",
            "database": {"existingSecret": "pg"},
            "milvus": {"existingSecret": "mv"},
            "console": {"enabled": True, "port": 8080},
        }
    )
    (container,) = pod_spec(r.get("Deployment", CONSOLE))["containers"]
    assert "--secure-cookies" not in container["args"]
    assert container["args"][-2:] == ["--port", "8080"]
    assert not r.has("Ingress", CONSOLE)


@pytest.mark.parametrize("name", ["console", "console_port", "console_secure_cookies"])
def test_server_settings_cannot_switch_the_console(name: str) -> None:
    with pytest.raises(HelmRenderError, match=f"server.settings.{name}: set by the chart itself"):
        render_values({"server": {"settings": {name: "on"}}})
