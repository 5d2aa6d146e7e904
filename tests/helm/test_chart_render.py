"""The chart renders, lints strictly and validates against Kubernetes' own schemas, in both shapes."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python
import kubernetes_validate
import pytest
from helm_support import (
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    REPO,
    VALUE_SETS,
    containers,
    pod_spec,
    rendered,
)
from kubernetes_validate.utils import SchemaNotFoundError, latest_version

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas
# kubernetes-validate ships.
OLDEST = "1.29"
NEWEST = latest_version()
# Custom resources, which the Kubernetes OpenAPI schemas do not hold; checked field by field below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("gateway.networking.k8s.io/v1", "GRPCRoute")}


def test_chart_targets_the_oldest_validated_version() -> None:
    metadata = helm_python.Chart.load(CHART_DIR).metadata
    assert metadata["kubeVersion"] == f">={OLDEST}.0-0"


@pytest.mark.parametrize("values_set", sorted(VALUE_SETS))
def test_strict_lint_passes(values_set: str) -> None:
    report = helm_python.lint(CHART_DIR, VALUE_SETS[values_set], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == []


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("values_set", sorted(VALUE_SETS))
def test_every_object_validates_against_kubernetes(values_set: str, version: str) -> None:
    objects = rendered(values_set).objects
    assert objects
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            with pytest.raises(SchemaNotFoundError):
                kubernetes_validate.validate(obj, version, strict=True)
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {path}: {error.message}")
        checked += 1
    assert checked > 0


def test_a_broken_object_is_refused_by_the_validator() -> None:
    """The validation above can fail: a misspelled field in a rendered object is caught."""
    deployment = rendered("distributed-example").get("Deployment", f"{FULLNAME}-api")
    broken: dict[str, Any] = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, NEWEST, strict=True)


def test_standalone_is_one_statefulset_on_a_claim() -> None:
    r = rendered("standalone")
    assert r.of_kind("Deployment") == []
    sts = r.get("StatefulSet", FULLNAME)
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == f"{FULLNAME}-headless"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    (server,) = pod_spec(sts)["containers"]
    assert server["args"] == ["serve", "--role", "all"]
    assert {"name": "data", "mountPath": "/data"} in server["volumeMounts"]
    # In standalone the pod owns the files: it migrates and registers the admin key itself.
    assert [c["name"] for c in pod_spec(sts)["initContainers"]] == ["migrate", "bootstrap-admin-key"]
    assert not r.has("Job", f"{FULLNAME}-migrate")


def test_standalone_uses_an_existing_claim() -> None:
    sts = rendered("standalone-existing-claim").get("StatefulSet", FULLNAME)
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in pod_spec(sts)["volumes"]}
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "feedback-data"}}


def test_standalone_without_persistence_says_the_data_is_lost() -> None:
    r = rendered("standalone-ephemeral")
    sts = r.get("StatefulSet", FULLNAME)
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in pod_spec(sts)["volumes"]}
    assert "emptyDir" in volumes["data"]
    assert "THE DATA IS LOST WITH THE POD" in r.notes
    assert r.of_kind("Pod") == []  # tests.enabled: false


def test_distributed_is_api_and_worker_deployments() -> None:
    r = rendered("distributed-minimal")
    assert r.of_kind("StatefulSet") == []
    for role in ("api", "worker"):
        deployment = r.get("Deployment", f"{FULLNAME}-{role}")
        assert deployment["spec"]["replicas"] == 2
        (server,) = pod_spec(deployment)["containers"]
        assert server["args"] == ["serve", "--role", role]
        assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == role
    settings = r.get("ConfigMap", f"{FULLNAME}-settings")["data"]
    assert settings["FEEDBACKLOOP_AUTO_MIGRATE"] == "false"  # the hook Job migrates, never the pods
    assert r.of_kind("HorizontalPodAutoscaler") == []
    assert r.of_kind("PodDisruptionBudget") == []
    assert r.of_kind("ServiceAccount") == []
    assert pod_spec(r.get("Deployment", f"{FULLNAME}-api"))["serviceAccountName"] == "feedback-runner"
    assert "topologySpreadConstraints" not in pod_spec(r.get("Deployment", f"{FULLNAME}-api"))


def test_distributed_autoscales_and_budgets_each_role() -> None:
    r = rendered("distributed-every-option")
    for role, most in (("api", 10), ("worker", 8)):
        name = f"{FULLNAME}-{role}"
        assert "replicas" not in r.get("Deployment", name)["spec"]  # the autoscaler owns it
        hpa = r.get("HorizontalPodAutoscaler", name)
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, most)
        pdb = r.get("PodDisruptionBudget", name)
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == role
        spread = pod_spec(r.get("Deployment", name))["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        assert all(c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == role for c in spread)


@pytest.mark.parametrize(
    ("values_set", "component"), [("standalone", "standalone"), ("distributed-example", "api")]
)
def test_clusterip_and_headless_services_select_the_serving_pods(values_set: str, component: str) -> None:
    r = rendered(values_set)
    main = r.get("Service", FULLNAME)
    headless = r.get("Service", f"{FULLNAME}-headless")
    assert main["spec"]["type"] == "ClusterIP" and "clusterIP" not in main["spec"]
    assert headless["spec"]["clusterIP"] == "None"
    for service in (main, headless):
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == component
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert port["port"] == 50051 and port["targetPort"] == "grpc"


def test_optional_parts_are_off_by_default() -> None:
    for values_set in ("standalone", "distributed-minimal"):
        kinds = {o["kind"] for o in rendered(values_set).objects}
        assert kinds.isdisjoint(
            {"Ingress", "GRPCRoute", "NetworkPolicy", "ServiceMonitor", "HorizontalPodAutoscaler"}
        )
        assert not rendered(values_set).has("ConfigMap", f"{FULLNAME}-policies")


@pytest.mark.parametrize("values_set", ["standalone-every-option", "distributed-every-option"])
def test_ingress_and_grpcroute_reach_the_grpc_port_with_tls(values_set: str) -> None:
    r = rendered(values_set)
    ingress = r.get("Ingress", FULLNAME)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "feedback-tls", "hosts": ["feedback.example.com"]}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "feedback.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": FULLNAME, "port": {"name": "grpc"}}
    route = r.get("GRPCRoute", FULLNAME)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "gateway", "namespace": "infra", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == ["feedback.example.com"]
    assert route["spec"]["rules"] == [{"backendRefs": [{"name": FULLNAME, "port": 50051}]}]


def test_service_monitor_scrapes_the_metrics_port_of_api_and_workers() -> None:
    r = rendered("distributed-every-option")
    monitor = r.get("ServiceMonitor", FULLNAME)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in r.of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
    with_metrics = {
        s["metadata"]["name"] for s in scraped if any(p["name"] == "metrics" for p in s["spec"]["ports"])
    }
    assert with_metrics == {FULLNAME, f"{FULLNAME}-worker-metrics"}
    for role in ("api", "worker"):
        (server,) = pod_spec(r.get("Deployment", f"{FULLNAME}-{role}"))["containers"]
        assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in server["ports"]
    assert r.get("ConfigMap", f"{FULLNAME}-settings")["data"]["FEEDBACKLOOP_METRICS_PORT"] == "9464"


@pytest.mark.parametrize("values_set", ["standalone-every-option", "distributed-every-option"])
def test_the_grafana_dashboard_is_a_configmap_for_the_sidecar_of_exported_series(values_set: str) -> None:
    dashboard = rendered(values_set).get("ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    (name,) = dashboard["data"]
    board = json.loads(dashboard["data"][name])
    assert name == "feedbackloop.json" and board["uid"] == "feedbackloop"
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"] if p["type"] != "row")
    # Every series a panel reads is one the server exports (the README's metrics table lists them).
    server_readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"`((?:feedbackloop|rpc)_[a-z_]+)`", server_readme))
    used = {
        re.sub(r"_(bucket|sum|count)$", "", n)
        for e in exprs
        for n in re.findall(r"\b(?:feedbackloop|rpc)_[a-z_]+", e)
    }
    assert used and used <= documented, used - documented
    negative_share = next(p for p in board["panels"] if p["title"] == "Negative share")
    assert "feedbackloop_feedback_negative_total" in negative_share["targets"][0]["expr"]


def test_the_dashboard_is_off_by_default() -> None:
    for values_set in ("standalone", "distributed-minimal"):
        assert not rendered(values_set).has("ConfigMap", f"{FULLNAME}-dashboard")


def test_network_policies_open_only_the_declared_ports() -> None:
    r = rendered("distributed-every-option")
    api = r.get("NetworkPolicy", f"{FULLNAME}-api")
    grpc_rule, metrics_rule = api["spec"]["ingress"]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert {"namespaceSelector": {"matchLabels": {"team": "llm-apps"}}} in grpc_rule["from"]
    # The chart's own hook Job and test Pod must still reach the api.
    assert any("podSelector" in peer for peer in grpc_rule["from"])
    assert metrics_rule["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    worker = r.get("NetworkPolicy", f"{FULLNAME}-worker")
    assert [rule["ports"] for rule in worker["spec"]["ingress"]] == [[{"port": "metrics", "protocol": "TCP"}]]


def test_settings_reach_every_server_container() -> None:
    r = rendered("distributed-every-option")
    settings = r.get("ConfigMap", f"{FULLNAME}-settings")["data"]
    assert settings["FEEDBACKLOOP_HOST"] == "0.0.0.0"  # a pod is reached on its own address
    assert settings["FEEDBACKLOOP_DATA_DIR"] == "/data"
    assert settings["FEEDBACKLOOP_POLICIES_DIR"] == ""  # the policy Job applies policies
    assert settings["FEEDBACKLOOP_MAX_CONNECTION_AGE_SECONDS"] == "300"
    assert settings["FEEDBACKLOOP_PIPELINE_LEASE_SECONDS"] == "90"
    assert settings["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    for role in ("api", "worker"):
        (server,) = containers(r.get("Deployment", f"{FULLNAME}-{role}"))
        assert server["envFrom"] == [{"configMapRef": {"name": f"{FULLNAME}-settings"}}]
        env = {e["name"]: e for e in server["env"]}
        attributes = env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(",")
        assert f"feedbackloop.role={role}" in attributes
        assert "deployment.environment=test" in attributes
        # $(POD_NAME) is expanded by the kubelet only from variables defined before it.
        names = [e["name"] for e in server["env"]]
        assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")


def test_image_digest_wins_over_the_tag() -> None:
    for obj in rendered("distributed-every-option").of_kind("Deployment"):
        for container in containers(obj):
            assert container["image"] == "feedbackloop@sha256:" + "ab" * 32
    (server,) = containers(rendered("distributed-minimal").get("Deployment", f"{FULLNAME}-api"))
    assert server["image"] == "feedbackloop:0.1.0"


def test_notes_say_how_to_reach_the_service_with_grpcurl() -> None:
    notes = rendered("distributed-example").notes
    assert f"kubectl port-forward --namespace {NAMESPACE} svc/{FULLNAME} 50051:50051" in notes
    assert "grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check" in notes
    assert f"dns:///{FULLNAME}-headless.{NAMESPACE}.svc:50051" in notes and "round_robin" in notes
    assert f"{FULLNAME}-admin-key" in notes
