"""`feedbackloop console`: the web console as a process of its own, a client of a server."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from feedbackloop.client import DEFAULT_SERVER, SERVER_ENV
from feedbackloop.config import Settings, cors_origins_of, is_loopback

DEFAULT_HOST = "127.0.0.1"
# The port `serve` gives the console, so both ways of running it answer on the same one.
DEFAULT_PORT: int = Settings.model_fields["console_port"].default


def register(sub: Any) -> None:
    console = sub.add_parser(
        "console",
        help="serve the web console for a running server (a client of its gRPC API)",
        description="Serve the web console on HTTP; every page calls the server's gRPC API with the "
        "signed-in person's API key.",
    )
    console.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        help=f"gRPC server host:port (${SERVER_ENV})",
    )
    console.add_argument("--host", default=DEFAULT_HOST, help=f"HTTP bind address (default {DEFAULT_HOST})")
    console.add_argument(
        "--port",
        default=None,
        help=f"HTTP port (FEEDBACKLOOP_CONSOLE_PORT, default {DEFAULT_PORT}; 0 picks a free one)",
    )
    console.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark the session cookie Secure (the console is reached over HTTPS through a proxy)",
    )
    console.add_argument(
        "--cors-origins",
        default=os.environ.get("FEEDBACKLOOP_CONSOLE_CORS_ORIGINS", ""),
        help="comma-separated origins whose pages may call the JSON endpoint (FEEDBACKLOOP_CONSOLE_CORS_ORIGINS)",
    )
    console.set_defaults(handler=cmd_console)


def cmd_console(args: argparse.Namespace) -> int:
    from feedbackloop.console.app import ConsoleConfig
    from feedbackloop.console.runner import ConsoleBindError, ConsoleServer

    # Read here, not when the parser is built: a bad variable must not break every other command.
    raw_port = (
        args.port
        if args.port is not None
        else os.environ.get("FEEDBACKLOOP_CONSOLE_PORT") or str(DEFAULT_PORT)
    )
    port = int(raw_port) if raw_port.isdigit() else -1
    if not 0 <= port <= 65535:
        print(f"error: --port: {raw_port!r} is not a port (0 to 65535)", file=sys.stderr)
        return 2
    try:
        origins = cors_origins_of(args.cors_origins)
    except ValueError as error:
        print(f"error: --cors-origins: {error}", file=sys.stderr)
        return 2
    config = ConsoleConfig(
        target=args.server,
        loopback_only=is_loopback(args.host),
        secure_cookies=args.secure_cookies,
        cors_origins=origins,
    )
    server = ConsoleServer(config, args.host, port)
    try:
        server.start()
    except ConsoleBindError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"console on {server.url} (gRPC server {args.server})", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0
