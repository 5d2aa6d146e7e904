"""Why a listening address could not be bound, in words a user can act on.

gRPC reports only that binding failed. Binding a plain socket to the same address gives the
operating system's reason (in use, not an address of this machine, a privileged port).
"""

from __future__ import annotations

import errno
import socket


def grpc_address(host: str, port: int) -> str:
    """`host:port` as gRPC wants it, bracketing a bare IPv6 address."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def bind_failure(host: str, port: int) -> str:
    """The reason `host:port` cannot be listened on, as a sentence naming the setting to change."""
    reason = _probe(host, port)
    if reason == errno.EADDRINUSE:
        return (
            f"port {port} is already in use on {host}: another process (perhaps another "
            "`feedbackloop serve`) is listening there. Stop it, or choose another port with "
            "--port or FEEDBACKLOOP_PORT"
        )
    if reason == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine: choose another with --host or FEEDBACKLOOP_HOST"
    if reason == errno.EACCES:
        return f"not allowed to listen on port {port} (a privileged port?): choose another with --port or FEEDBACKLOOP_PORT"
    if reason is not None:
        return f"could not listen on {grpc_address(host, port)}: {errno.errorcode.get(reason, reason)}"
    return f"could not listen on {grpc_address(host, port)}"


def _probe(host: str, port: int) -> int | None:
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(bare or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return errno.EADDRNOTAVAIL
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(address)
            except OSError as error:
                return error.errno
    return None
