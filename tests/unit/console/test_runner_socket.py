"""The console's listening socket says it is TCP, so asyncio turns Nagle off on its connections.

With protocol 0 asyncio leaves TCP_NODELAY unset and every response waits for the client's
delayed ACK (about 40 ms on Linux), which alone would eat a fifth of the review screen's budget.
"""

from __future__ import annotations

import socket

from feedbackloop.console.runner import _bind


def test_the_listening_socket_is_tcp_by_protocol_number() -> None:
    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
