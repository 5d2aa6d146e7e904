"""Where `serve` gets its address: flags over FEEDBACKLOOP_* over the file, and `make run`
passes flags only for HOST/PORT given on make's command line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from feedbackloop.cli import _settings, build_parser

REPO = Path(__file__).resolve().parents[2]


def serve_settings(*argv: str) -> tuple[str, int]:
    settings = _settings(build_parser().parse_args(["serve", *argv]))
    return settings.host, settings.port


def test_the_environment_sets_the_address_unless_a_flag_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACKLOOP_HOST", "0.0.0.0")
    monkeypatch.setenv("FEEDBACKLOOP_PORT", "7001")
    assert serve_settings() == ("0.0.0.0", 7001)
    assert serve_settings("--port", "7002") == ("0.0.0.0", 7002)
    assert serve_settings("--host", "127.0.0.2") == ("127.0.0.2", 7001)


def make_run(*make_args: str, **env: str) -> str:
    """The `feedbackloop serve` command `make run` would execute (`make -n` runs nothing)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    environment = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")} | env
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "run", *make_args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    (command,) = [line for line in result.stdout.splitlines() if "feedbackloop serve" in line]
    return command.split("/bin/", 1)[1]


def test_make_run_leaves_the_address_to_the_settings() -> None:
    assert make_run(FEEDBACKLOOP_PORT="7001", FEEDBACKLOOP_HOST="0.0.0.0") == "feedbackloop serve"
    # HOST and PORT in the environment are not server settings (zsh sets HOST, platforms PORT).
    assert make_run(HOST="build-box", PORT="8080") == "feedbackloop serve"


def test_make_run_passes_host_and_port_given_to_make() -> None:
    assert make_run("PORT=6000") == "feedbackloop serve --port 6000"
    assert make_run("HOST=0.0.0.0", "PORT=6000") == "feedbackloop serve --host 0.0.0.0 --port 6000"
