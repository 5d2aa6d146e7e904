"""Serving the console: uvicorn on a thread of its own, beside the gRPC server or alone.

The socket is bound here, before uvicorn starts, so a taken port is a clear startup error
naming the setting rather than a log line from a thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from feedbackloop.console.app import ConsoleConfig, build_app

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0


class ConsoleBindError(RuntimeError):
    """The console's port cannot be bound; the message says which and why."""


def target_for(host: str, port: int) -> str:
    """The gRPC target a console beside its server dials: loopback for a wildcard bind."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
    # without it every response waits about 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bare, port))
    except OSError as error:
        sock.close()
        raise ConsoleBindError(
            f"cannot serve the console on {host}:{port} (FEEDBACKLOOP_CONSOLE_PORT): {error.strerror or error}"
        ) from error
    sock.listen(128)
    sock.setblocking(False)
    return sock


class ConsoleServer:
    def __init__(self, config: ConsoleConfig, host: str, port: int) -> None:
        self.config = config
        self.host = host
        self._port = port
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> int:
        """Bind and serve; the port once uvicorn answers."""
        self._socket = _bind(self.host, self._port)
        self.port = int(self._socket.getsockname()[1])
        server = uvicorn.Server(
            uvicorn.Config(
                build_app(self.config),
                log_level="warning",
                lifespan="on",
                access_log=False,
                # Behind an Ingress, X-Forwarded-Proto tells the console it is on HTTPS.
                proxy_headers=True,
            )
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._socket]}, name="console", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConsoleBindError(f"the console on {self.url} did not start")
            time.sleep(0.02)
        log.info("console: %s (a client of gRPC %s)", self.url, self.config.target)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
