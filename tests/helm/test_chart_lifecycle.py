"""Hooks, probes, checksums, secrets and the security context of the rendered chart."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helm_python import HelmRenderError
from helm_support import (
    DATABASE_SECRET,
    FULLNAME,
    MILVUS_SECRET,
    POLICY_FILES,
    VALUE_SETS,
    annotations,
    containers,
    env_of,
    pod_annotations,
    pod_spec,
    render_values,
    rendered,
    workloads,
)

SERVER_WORKLOADS = {
    "standalone": [("StatefulSet", FULLNAME)],
    "distributed-example": [("Deployment", f"{FULLNAME}-api"), ("Deployment", f"{FULLNAME}-worker")],
}


def _server(obj: dict[str, Any]) -> dict[str, Any]:
    (server,) = [c for c in pod_spec(obj)["containers"] if c["name"] == "feedbackloop"]
    return server


# --- probes ---


@pytest.mark.parametrize("values_set", sorted(SERVER_WORKLOADS))
def test_grpc_probes_on_the_health_service(values_set: str) -> None:
    r = rendered(values_set)
    for kind, name in SERVER_WORKLOADS[values_set]:
        server = _server(r.get(kind, name))
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert server[probe]["grpc"] == {"port": 50051}, probe  # grpc.health.v1, whole server
        # Liveness and readiness wait for the startup probe, which must cover the model load.
        startup = server["startupProbe"]
        assert startup["initialDelaySeconds"] + startup["periodSeconds"] * startup["failureThreshold"] >= 300
        assert server["livenessProbe"]["failureThreshold"] * server["livenessProbe"]["periodSeconds"] >= 60


def test_probes_follow_their_values() -> None:
    r = render_values(
        {
            "probes": {
                "liveness": {"enabled": False},
                "readiness": {"service": "feedbackloop.v1.IngestionService", "periodSeconds": 2},
            }
        }
    )
    server = _server(r.get("StatefulSet", FULLNAME))
    assert "livenessProbe" not in server
    assert server["readinessProbe"]["grpc"] == {"port": 50051, "service": "feedbackloop.v1.IngestionService"}
    assert server["readinessProbe"]["periodSeconds"] == 2


# --- hooks ---


def _hook(obj: dict[str, Any]) -> tuple[str, int]:
    found = annotations(obj)
    return found["helm.sh/hook"], int(found.get("helm.sh/hook-weight", "0"))


def test_migration_job_runs_before_install_and_upgrade() -> None:
    r = rendered("distributed-example")
    job = r.get("Job", f"{FULLNAME}-migrate")
    assert _hook(job) == ("pre-install,pre-upgrade", -10)
    assert annotations(job)["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = pod_spec(job)
    assert [c["args"] for c in spec["initContainers"]] == [["db", "upgrade"]]
    (bootstrap,) = spec["containers"]
    assert bootstrap["args"][:2] == ["keys", "ensure"]
    # Pre-install runs before the chart's ServiceAccount and ConfigMap exist.
    assert "serviceAccountName" not in spec
    assert all("envFrom" not in c for c in containers(job))
    # The key it registers exists before it: the admin key Secret is an earlier hook.
    secret = r.get("Secret", f"{FULLNAME}-admin-key")
    assert _hook(secret) == ("pre-install,pre-upgrade", -20)


def test_policy_job_applies_the_configmap_after_install_and_upgrade() -> None:
    r = rendered("distributed-every-option")
    job = r.get("Job", f"{FULLNAME}-policy")
    assert _hook(job) == ("post-install,post-upgrade", 10)
    spec = pod_spec(job)
    (validate,) = spec["initContainers"]
    (apply,) = spec["containers"]
    assert validate["args"] == ["policy", "validate", "/policies"]
    assert apply["args"] == ["policy", "apply", "/policies"]
    env = env_of(apply)
    assert env["FEEDBACKLOOP_SERVER"]["value"] == f"{FULLNAME}.feedback.svc:50051"
    assert env["FEEDBACKLOOP_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "fl-admin", "key": "key"}
    # An invalid set, or one the server refuses (exit status 1), fails the Job at once; an
    # unreachable api (status 3) is retried.
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert [(r["action"], r["onExitCodes"]) for r in rules] == [
        ("FailJob", {"containerName": "validate", "operator": "NotIn", "values": [0]}),
        ("FailJob", {"containerName": "apply", "operator": "In", "values": [1]}),
    ]
    # One subPath mount per file, so that the loader never sees the ConfigMap's ..data copies.
    mounts = [m for m in apply["volumeMounts"] if m["name"] == "policies"]
    assert mounts == [
        {"name": "policies", "mountPath": f"/policies/{n}", "subPath": n, "readOnly": True}
        for n in POLICY_FILES
    ]
    configmap = r.get("ConfigMap", f"{FULLNAME}-policies")
    assert configmap["data"] == POLICY_FILES


def test_policy_files_pass_the_real_validator(tmp_path: Path) -> None:
    """The example values' policies are what the Job's validate step would accept."""
    for values_set in ("distributed-example", "distributed-every-option"):
        configmap = rendered(values_set).get("ConfigMap", f"{FULLNAME}-policies")
        target = tmp_path / values_set
        target.mkdir()
        for name, content in configmap["data"].items():
            (target / name).write_text(content)
        done = subprocess.run(
            [sys.executable, "-m", "feedbackloop.cli", "policy", "validate", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def test_policy_checksum_follows_the_files() -> None:
    job = rendered("distributed-every-option").get("Job", f"{FULLNAME}-policy")
    changed_values = json.loads(json.dumps(VALUE_SETS["distributed-every-option"]))
    changed_values["policies"]["files"]["feedback-schema.yaml"] += "        - name: unhelpful\n"
    changed = render_values(changed_values).get("Job", f"{FULLNAME}-policy")
    for read in (annotations, pod_annotations):
        assert read(job)["checksum/policies"] != read(changed)["checksum/policies"]


def test_no_policies_no_policy_job() -> None:
    assert not rendered("distributed-minimal").has("Job", f"{FULLNAME}-policy")


def test_helm_test_pod_checks_health_and_does_a_cli_round_trip() -> None:
    pod = rendered("standalone").get("Pod", f"{FULLNAME}-test")
    assert annotations(pod)["helm.sh/hook"] == "test"
    (health,) = pod["spec"]["initContainers"]
    assert health["command"][:2] == ["python", "-c"] and "grpc_health.v1" in health["command"][2]
    (cli,) = pod["spec"]["containers"]
    assert cli["args"] == ["pipeline", "status"]
    env = env_of(cli)
    assert env["FEEDBACKLOOP_SERVER"]["value"] == f"{FULLNAME}.feedback.svc:50051"
    assert "secretKeyRef" in env["FEEDBACKLOOP_API_KEY"]["valueFrom"]


def test_health_script_of_the_test_pod_is_python() -> None:
    pod = rendered("standalone").get("Pod", f"{FULLNAME}-test")
    compile(pod["spec"]["initContainers"][0]["command"][2], "health", "exec")


# --- checksums ---


def _pod_checksums(values: dict[str, Any]) -> dict[str, str]:
    obj = render_values(values).get("Deployment", f"{FULLNAME}-api")
    found = pod_annotations(obj)
    return {k: found[k] for k in ("checksum/config", "checksum/secret")}


def test_checksums_roll_the_pods_on_config_and_secret_changes() -> None:
    base = VALUE_SETS["distributed-minimal"]
    before = _pod_checksums(base)
    config_changed = _pod_checksums({**base, "server": {"settings": {"pipeline_lease_seconds": 30}}})
    assert config_changed["checksum/config"] != before["checksum/config"]
    assert config_changed["checksum/secret"] == before["checksum/secret"]
    secret_changed = _pod_checksums({**base, "database": {"existingSecret": "another", "secretKey": "url"}})
    assert secret_changed["checksum/secret"] != before["checksum/secret"]
    assert secret_changed["checksum/config"] == before["checksum/config"]
    assert _pod_checksums(base) == before


@pytest.mark.parametrize("values_set", sorted(SERVER_WORKLOADS))
def test_every_server_pod_carries_both_checksums(values_set: str) -> None:
    r = rendered(values_set)
    for kind, name in SERVER_WORKLOADS[values_set]:
        found = pod_annotations(r.get(kind, name))
        assert len(found["checksum/config"]) == 64 and len(found["checksum/secret"]) == 64


# --- secrets ---


@pytest.mark.parametrize("values_set", sorted(VALUE_SETS))
def test_no_secret_value_outside_a_secret(values_set: str) -> None:
    """The generated admin key appears only in its Secret; credentials only as secretKeyRef."""
    r = rendered(values_set)
    secret_values = []
    for secret in r.of_kind("Secret"):
        secret_values += [base64.b64decode(v).decode() for v in secret.get("data", {}).values()]
        secret_values += list(secret.get("stringData", {}).values())
    everything_else = json.dumps([o for o in r.objects if o["kind"] != "Secret"]) + r.notes
    for value in secret_values:
        assert value not in everything_else
    for obj in workloads(r):
        for container in containers(obj):
            for name, entry in env_of(container).items():
                if any(
                    word in name for word in ("DATABASE_URL", "MILVUS_URI", "MILVUS_TOKEN", "API_KEY", "_KEY")
                ):
                    assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], (obj["kind"], name)
    for configmap in r.of_kind("ConfigMap"):
        assert not {
            "FEEDBACKLOOP_DATABASE_URL",
            "FEEDBACKLOOP_MILVUS_URI",
            "FEEDBACKLOOP_MILVUS_TOKEN",
        } & set(configmap["data"])


def test_the_generated_admin_key_looks_like_a_key() -> None:
    secret = rendered("standalone").get("Secret", f"{FULLNAME}-admin-key")
    key = base64.b64decode(secret["data"]["admin-key"]).decode()
    prefix, key_id, rest = key.split("_", 2)
    assert prefix == "fbl" and len(key_id) == 12 and int(key_id, 16) >= 0 and len(rest) == 43


def test_credentials_are_read_from_the_named_secrets() -> None:
    r = rendered("distributed-every-option")
    for role in ("api", "worker"):
        env = env_of(_server(r.get("Deployment", f"{FULLNAME}-{role}")))
        assert env["FEEDBACKLOOP_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": DATABASE_SECRET,
            "key": "url",
        }
        assert env["FEEDBACKLOOP_MILVUS_URI"]["valueFrom"]["secretKeyRef"] == {
            "name": MILVUS_SECRET,
            "key": "uri",
        }
        assert env["FEEDBACKLOOP_MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": MILVUS_SECRET,
            "key": "token",
        }
    # With an existing admin key Secret, the chart makes none.
    assert r.of_kind("Secret") == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("database_url", "server.settings.database_url: credentials and endpoints come from Secrets"),
        ("milvus_token", "server.settings.milvus_token: credentials and endpoints come from Secrets"),
        ("host", "server.settings.host: set by the chart itself"),
    ],
)
def test_credentials_and_chart_settings_given_as_settings_are_refused(name: str, message: str) -> None:
    """A database URL cannot be smuggled into the settings ConfigMap as plain text."""
    with pytest.raises(HelmRenderError, match=re.escape(message)):
        render_values({"server": {"settings": {name: "postgresql+psycopg://u:s3cr3t@db/f"}}})


# --- security context ---


@pytest.mark.parametrize("values_set", sorted(VALUE_SETS))
def test_every_pod_is_restricted(values_set: str) -> None:
    for obj in workloads(rendered(values_set)):
        spec = pod_spec(obj)
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert "emptyDir" in volumes["tmp"], where
        for container in containers(obj):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # /tmp and the data directory are the only writable paths.
            assert mounts.get("/tmp") == "tmp", (where, container["name"])
            writable = {p for p, n in mounts.items() if n in ("tmp", "data")}
            assert writable <= {"/tmp", "/data"}
            assert "resources" in container and container["resources"]["requests"], where


@pytest.mark.parametrize("values_set", sorted(SERVER_WORKLOADS))
def test_termination_grace_covers_the_shutdown(values_set: str) -> None:
    r = rendered(values_set)
    for kind, name in SERVER_WORKLOADS[values_set]:
        # The server exits at most ~3 s after FEEDBACKLOOP_SHUTDOWN_GRACE_SECONDS.
        assert pod_spec(r.get(kind, name))["terminationGracePeriodSeconds"] >= 5 + 3
