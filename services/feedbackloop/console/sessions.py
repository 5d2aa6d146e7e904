"""Signed-in browser sessions, kept in the console process.

The cookie carries only a random session id; the API key stays on the server side, so a page
script (or a stolen page) never sees it. Sessions live in memory: a restart of the console
signs everyone out, which is the safe direction. Several console replicas need sticky
sessions (the chart runs one).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

COOKIE_NAME = "feedbackloop_console"
# Idle time after which a session is gone; every request renews it.
IDLE_SECONDS = 8 * 3600
# Sessions kept at most; the longest idle go first (a flood of sign-ins cannot grow memory).
MAX_SESSIONS = 10_000
# Items a reviewer skipped in one sitting, per queue, remembered so "skip" moves on.
MAX_SKIPPED = 200


@dataclass(frozen=True)
class Identity:
    """Who the key is, as the server says (IdentityService.WhoAmI)."""

    project: str
    key_id: str
    scopes: frozenset[str]
    reviewer: str

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass
class Claim:
    """The item a reviewer holds in one queue: the server has no "my claim" call, so the
    console remembers it (after a sign-out its lease simply expires)."""

    claim_id: str
    item_id: str
    item: bytes  # the ReviewItem as claimed (serialized): the page shows it until resolved
    lease_expires_at: float  # seconds since the epoch


@dataclass
class ConsoleSession:
    id: str
    key: str | None  # None: a keyless loopback server
    identity: Identity
    csrf_token: str
    last_seen: float
    claims: dict[str, Claim] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    # Slow-changing reads a screen repeats on every item (the schema's categories): name ->
    # (monotonic time read, value). Per session, so a key only ever sees what it read itself.
    remembered: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def recall(self, name: str, max_age_seconds: float) -> Any | None:
        entry = self.remembered.get(name)
        if entry is None or time.monotonic() - entry[0] > max_age_seconds:
            return None
        return entry[1]

    def remember(self, name: str, value: Any) -> None:
        self.remembered[name] = (time.monotonic(), value)

    def skip(self, queue: str, item_id: str) -> list[str]:
        items = self.skipped.setdefault(queue, [])
        if item_id not in items:
            items.append(item_id)
            del items[:-MAX_SKIPPED]
        return list(items)


class SessionStore:
    def __init__(self, idle_seconds: float = IDLE_SECONDS, max_sessions: int = MAX_SESSIONS) -> None:
        self._idle = idle_seconds
        self._max = max_sessions
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, key: str | None, identity: Identity) -> ConsoleSession:
        session = ConsoleSession(
            id=secrets.token_urlsafe(32),
            key=key,
            identity=identity,
            csrf_token=secrets.token_urlsafe(32),
            last_seen=time.monotonic(),
        )
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        if not session_id:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self._idle:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session

    def drop(self, session_id: str) -> ConsoleSession | None:
        with self._lock:
            return self._sessions.pop(session_id, None)
