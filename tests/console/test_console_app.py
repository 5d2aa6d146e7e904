"""The console process as deployed: the JSON endpoint is served on the console's own port, and
`feedbackloop console` runs the same app as a separate client of a server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
from console_support import create_key


def test_the_json_endpoint_is_served_beside_the_pages(console_server: tuple[Any, str]) -> None:
    app, base = console_server
    key = create_key(app, "read", project="default")
    reply = httpx.post(
        f"{base}/feedbackloop.v1.IdentityService/WhoAmI",
        json={},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["project"] == "default"
    assert reply.json()["scopes"] == ["read"]
    # A wrong key is the server's refusal, in Connect's error form.
    refused = httpx.post(
        f"{base}/feedbackloop.v1.IdentityService/WhoAmI",
        json={},
        headers={"Authorization": "Bearer fbl_000000_" + "x" * 40},
        timeout=10,
    )
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthenticated"


def test_feedbackloop_console_serves_a_running_server(console_server: tuple[Any, str]) -> None:
    app, _ = console_server
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "feedbackloop.cli",
            "console",
            "--server",
            f"127.0.0.1:{app.port}",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "FEEDBACKLOOP_CONSOLE_PORT": ""},
    )
    try:
        assert proc.stdout is not None
        line = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "console on" in line or not line:
                break
        match = re.search(r"console on (http://\S+)", line)
        assert match, line
        base = match.group(1)
        signed_out = httpx.get(f"{base}/reviews", timeout=10)
        assert signed_out.status_code == 303
        assert signed_out.headers["location"].startswith("/sign-in")
        key = create_key(app, "read")
        who = httpx.post(
            f"{base}/feedbackloop.v1.IdentityService/WhoAmI",
            json={},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert who.status_code == 200 and who.json()["project"] == "default"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_a_taken_console_port_is_a_clear_startup_error(console_server: tuple[Any, str]) -> None:
    app, _ = console_server
    assert app.console is not None
    taken = app.console.port
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "feedbackloop.cli",
            "console",
            "--server",
            f"127.0.0.1:{app.port}",
            "--port",
            str(taken),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"cannot serve the console on 127.0.0.1:{taken} (FEEDBACKLOOP_CONSOLE_PORT)" in result.stderr


def test_a_bad_console_port_is_refused_by_name() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "feedbackloop.cli", "console", "--port", "http"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--port: 'http' is not a port" in result.stderr
