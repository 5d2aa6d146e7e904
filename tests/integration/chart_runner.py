"""Run a rendered Helm chart's containers as local processes, as a kubelet would run its pods.

There is no cluster here, so this does the little of Kubernetes the chart relies on:

- a container's process is its `command` (else the image's entrypoint, `feedbackloop`) and its
  `args`, in an environment built from `env` (values, `secretKeyRef`, `configMapKeyRef`,
  `fieldRef`, `$(VAR)` references) and `envFrom`, resolved from the rendered objects plus the
  Secrets the chart expects to exist (`existingSecret`);
- each pod gets its own root directory; a volume (emptyDir, PersistentVolumeClaim, ConfigMap,
  whole or by `subPath`) appears at its mount path under that root, and absolute paths in the
  args and env that lie under a mount are rewritten to it, as a mount namespace would show them;
- each pod has its own network namespace in Kubernetes, so each replica gets its own loopback
  port for the container port; a Service name in the environment (`NAME.NAMESPACE.svc:PORT`)
  becomes a gRPC target listing its ready pods' ports;
- probes are the chart's `grpc:` probes, waited on with their own timings;
- hooks run in weight order, init containers one after another, then the pod's containers.

Processes are always killed by pid at the end (`ChartRun.close`).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# What the image sets for every container (Dockerfile): offline model, unbuffered logs.
IMAGE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
# The image's entrypoint, and its `python`.
ENTRYPOINT = [sys.executable, "-m", "feedbackloop.cli"]
INTERPRETERS = {"python", "python3"}
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hook_weight(obj: dict[str, Any]) -> int:
    return int((obj["metadata"].get("annotations") or {}).get("helm.sh/hook-weight", "0"))


def hooks_of(obj: dict[str, Any]) -> set[str]:
    raw = (obj["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
    return {h.strip() for h in raw.split(",") if h.strip()}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
    return spec


@dataclass
class Pod:
    name: str
    owner: dict[str, Any]
    root: Path
    port_map: dict[int, int] = field(default_factory=dict)  # container port -> local port
    volumes: dict[str, Path] = field(default_factory=dict)  # volume name -> local directory
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        metadata = (
            self.owner["metadata"]
            if self.owner["kind"] == "Pod"
            else self.owner["spec"]["template"]["metadata"]
        )
        return dict(metadata.get("labels") or {})

    def log(self, container: str) -> Path:
        return self.root / f"{container}.log"


class ChartRun:
    """The rendered objects, the Secrets given from outside, and the pods started from them."""

    def __init__(
        self, objects: tuple[dict[str, Any], ...], work: Path, external_secrets: dict[str, dict[str, str]]
    ):
        self.objects = objects
        self.work = work
        self.secrets: dict[str, dict[str, str]] = {
            name: dict(data) for name, data in external_secrets.items()
        }
        for obj in objects:
            if obj["kind"] == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
                data.update(obj.get("stringData") or {})
                self.secrets[obj["metadata"]["name"]] = data
        self.config_maps = {
            o["metadata"]["name"]: dict(o.get("data") or {}) for o in objects if o["kind"] == "ConfigMap"
        }
        self.namespace = "feedback"
        self.pods: list[Pod] = []
        self.claims: dict[str, Path] = {}  # PersistentVolumeClaims outlive their pods

    # --- the objects ---

    def get(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        return found

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def hooks(self, hook: str) -> list[dict[str, Any]]:
        return sorted((o for o in self.objects if hook in hooks_of(o)), key=hook_weight)

    # --- pods ---

    def new_pod(self, owner: dict[str, Any], ordinal: int = 0) -> Pod:
        base = owner["metadata"]["name"]
        name = f"{base}-{ordinal}" if owner["kind"] != "Pod" else base
        root = self.work / "pods" / name
        if root.exists():  # a restarted pod: a fresh root, the same claims
            shutil.rmtree(root)
        root.mkdir(parents=True)
        pod = Pod(name, owner, root)
        spec = pod_spec(owner)
        for container in spec.get("initContainers", []) + spec["containers"]:
            for port in container.get("ports", []):
                pod.port_map.setdefault(int(port["containerPort"]), free_port())
        self._mount_volumes(pod, ordinal)
        self.pods.append(pod)
        return pod

    def _mount_volumes(self, pod: Pod, ordinal: int) -> None:
        owner = pod.owner
        volumes: dict[str, Path] = {}
        for volume in pod_spec(owner).get("volumes", []):
            target = pod.root / ".volumes" / volume["name"]
            target.mkdir(parents=True)
            if "configMap" in volume:
                for key, text in self.config_maps[volume["configMap"]["name"]].items():
                    (target / key).write_text(text)
            elif "secret" in volume:
                for key, text in self.secrets[volume["secret"]["secretName"]].items():
                    (target / key).write_text(text)
            elif "persistentVolumeClaim" in volume:
                target.rmdir()
                target = self._claim(volume["persistentVolumeClaim"]["claimName"])
            volumes[volume["name"]] = target
        for template in owner.get("spec", {}).get("volumeClaimTemplates", []):
            name = template["metadata"]["name"]
            volumes[name] = self._claim(f"{name}-{owner['metadata']['name']}-{ordinal}")
        pod.volumes = volumes

    def _claim(self, name: str) -> Path:
        if name not in self.claims:
            self.claims[name] = self.work / "claims" / name
            self.claims[name].mkdir(parents=True)
        return self.claims[name]

    def _mounts(self, pod: Pod, container: dict[str, Any]) -> list[str]:
        """Make the container's mounts appear under the pod's root; the mount paths."""
        paths = []
        for mount in container.get("volumeMounts", []):
            source = pod.volumes[mount["name"]]
            if "subPath" in mount:
                source = source / mount["subPath"]
            where = pod.root / mount["mountPath"].lstrip("/")
            where.parent.mkdir(parents=True, exist_ok=True)
            if where.is_symlink() or where.exists():
                if where.is_symlink() or where.is_file():
                    where.unlink()
                else:
                    shutil.rmtree(where)
            if source.is_dir():
                where.symlink_to(source, target_is_directory=True)
            else:
                shutil.copyfile(source, where)  # a subPath file: a copy, as a read-only mount
            paths.append(mount["mountPath"])
        return paths

    def _local(self, pod: Pod, mounts: list[str], value: str) -> str:
        """An absolute path under one of the container's mounts, as the process sees it here."""
        tops = {"/" + m.strip("/").split("/")[0] for m in mounts}
        for top in sorted(tops, key=len, reverse=True):
            if value == top or value.startswith(top + "/"):
                return str(pod.root) + value
        return value

    def environment(self, pod: Pod, container: dict[str, Any], mounts: list[str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.config_maps[source["configMapRef"]["name"]])
            if "secretRef" in source:
                env.update(self.secrets[source["secretRef"]["name"]])
        for item in container.get("env", []):
            if "value" in item:
                value = _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
            else:
                value = self._value_from(pod, item["valueFrom"])
            env[item["name"]] = value
        for name, value in env.items():
            env[name] = self._service_target(self._local(pod, mounts, value))
        # The pod's own network namespace: its container port is a port of its own here.
        for container_port, local_port in pod.port_map.items():
            for name, value in env.items():
                if value == str(container_port) and name.endswith("_PORT"):
                    env[name] = str(local_port)
        return {**IMAGE_ENV, "PATH": os.environ.get("PATH", ""), "HOME": str(pod.root / "tmp"), **env}

    def _value_from(self, pod: Pod, source: dict[str, Any]) -> str:
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return self.secrets[ref["name"]][ref["key"]]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self.config_maps[ref["name"]][ref["key"]]
        field_path = source["fieldRef"]["fieldPath"]
        return {"metadata.name": pod.name, "metadata.namespace": self.namespace}[field_path]

    def _service_target(self, value: str) -> str:
        """`NAME.NAMESPACE.svc:PORT` -> a gRPC target of the Service's ready endpoints."""
        match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)", value)
        if match is None:
            return value
        service = self.get("Service", match.group(1))
        port = int(match.group(3))
        (spec_port,) = [p for p in service["spec"]["ports"] if int(p["port"]) == port]
        endpoints = [
            self._target_port(pod, spec_port) for pod in self.pods_selected(service["spec"]["selector"])
        ]
        assert endpoints, f"Service {match.group(1)} has no endpoints"
        return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in endpoints)

    def pods_selected(self, selector: dict[str, str]) -> list[Pod]:
        return [
            pod
            for pod in self.pods
            if pod.owner["kind"] in ("Deployment", "StatefulSet")
            and all(pod.labels.get(k) == v for k, v in selector.items())
            and any(proc.poll() is None for _, proc in pod.processes)
        ]

    @staticmethod
    def _target_port(pod: Pod, spec_port: dict[str, Any]) -> int:
        target = spec_port.get("targetPort", spec_port["port"])
        for container in pod_spec(pod.owner)["containers"]:
            for port in container.get("ports", []):
                if target in (port.get("name"), port["containerPort"]):
                    return pod.port_map[int(port["containerPort"])]
        raise AssertionError(f"no container port {target} in {pod.name}")

    def command(self, pod: Pod, container: dict[str, Any], mounts: list[str]) -> list[str]:
        command = list(container.get("command") or [])
        if command and command[0] in INTERPRETERS:
            command[0] = sys.executable
        argv = (command or ENTRYPOINT) + [str(a) for a in container.get("args") or []]
        return [argv[0]] + [self._local(pod, mounts, a) for a in argv[1:]]

    def start_container(self, pod: Pod, container: dict[str, Any]) -> subprocess.Popen[bytes]:
        mounts = self._mounts(pod, container)
        env = self.environment(pod, container, mounts)
        argv = self.command(pod, container, mounts)
        (pod.root / "tmp").mkdir(exist_ok=True)
        with open(pod.log(container["name"]), "ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=pod.root
            )
        pod.processes.append((container["name"], proc))
        return proc

    def run_to_completion(self, pod: Pod, timeout: float) -> None:
        """A Job's or a test Pod's run: init containers in turn, then the containers; each must exit 0."""
        spec = pod_spec(pod.owner)
        for container in spec.get("initContainers", []):
            self._finish(pod, container, self.start_container(pod, container), timeout)
        started = [(c, self.start_container(pod, c)) for c in spec["containers"]]
        for container, proc in started:
            self._finish(pod, container, proc, timeout)

    def _finish(
        self, pod: Pod, container: dict[str, Any], proc: subprocess.Popen[bytes], timeout: float
    ) -> None:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(
                f"{pod.name}/{container['name']} ran past {timeout}s:\n{self.tail(pod, container)}"
            ) from None
        assert code == 0, f"{pod.name}/{container['name']} exited {code}:\n{self.tail(pod, container)}"

    def start_server_pod(self, owner: dict[str, Any], ordinal: int, init_timeout: float = 120.0) -> Pod:
        """A Deployment's or StatefulSet's replica: its init containers, then its servers."""
        pod = self.new_pod(owner, ordinal)
        spec = pod_spec(owner)
        for container in spec.get("initContainers", []):
            self._finish(pod, container, self.start_container(pod, container), init_timeout)
        for container in spec["containers"]:
            self.start_container(pod, container)
        return pod

    def wait_probes(self, pod: Pod) -> None:
        """The startup probe, then the readiness probe, with the timings the chart declares."""
        for container in pod_spec(pod.owner)["containers"]:
            for kind in ("startupProbe", "readinessProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                assert "grpc" in probe, f"{pod.name}: {kind} is not a gRPC probe"
                port = pod.port_map[int(probe["grpc"]["port"])]
                limit = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get(
                    "failureThreshold", 3
                )
                self._wait_serving(pod, container, port, probe["grpc"].get("service", ""), limit)

    def _wait_serving(
        self, pod: Pod, container: dict[str, Any], port: int, service: str, limit: float
    ) -> None:
        deadline = time.monotonic() + limit
        (proc,) = [p for name, p in pod.processes if name == container["name"]]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert proc.poll() is None, (
                    f"{pod.name} exited {proc.returncode}:\n{self.tail(pod, container)}"
                )
                try:
                    request = health_pb2.HealthCheckRequest(service=service)
                    if stub.Check(request, timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise AssertionError(f"{pod.name}: not SERVING within {limit}s:\n{self.tail(pod, container)}")

    def tail(self, pod: Pod, container: dict[str, Any], chars: int = 4000) -> str:
        path = pod.log(container["name"])
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"

    def kill(self, pod: Pod, sig: int = signal.SIGKILL) -> None:
        for _, proc in pod.processes:
            if proc.poll() is None:
                os.kill(proc.pid, sig)
                proc.wait(timeout=30)

    def close(self) -> None:
        for pod in self.pods:
            for _, proc in pod.processes:
                if proc.poll() is None:
                    proc.terminate()
        for pod in self.pods:
            for _, proc in pod.processes:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
