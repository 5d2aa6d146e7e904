"""Domain errors that know their gRPC status code.

Servicers raise these and never build statuses by hand; `interceptors.ErrorMappingInterceptor`
turns them into a rich status (with `google.rpc.BadRequest` field violations for invalid
arguments) whose message carries the same text, so clients without rich-status support still
see which field was wrong and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

# An error goes back in the status trailers, which gRPC clients cap: a message that echoes a huge
# value would reach the client as RESOURCE_EXHAUSTED instead of the real error. The message goes
# percent-encoded (a non-ASCII byte costs three) and again, with the violations, base64-encoded
# in the rich status, so both are held to a budget that keeps the trailers near 7 KB at worst:
# a quoted value is cut to QUOTE_CHARS, and violations past the budget are counted, not listed.
QUOTE_CHARS = 80
FIELD_BYTES = 200
DESCRIPTION_BYTES = 500
MESSAGE_WIRE_BYTES = 1500
VIOLATIONS_BYTES = 2400


def quote(value: str, limit: int = QUOTE_CHARS) -> str:
    """`value` as an error message may quote it: control characters escaped, and when longer
    than `limit`, its start, an ellipsis and its length."""
    shown = value if len(value) <= limit else value[:limit]
    escaped = "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in shown)
    return escaped if len(value) <= limit else f"{escaped}… ({len(value)} characters)"


def _utf8(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _wire(ch: str) -> int:
    """Bytes a character costs in grpc-message, which percent-encodes all but printable ASCII."""
    return 1 if " " <= ch <= "~" and ch != "%" else 3 * _utf8(ch)


def _cut(text: str, limit: int, cost: Callable[[str], int] = _utf8) -> str:
    """`text` cut to at most `limit` bytes, counting each character by `cost`, plus a marker
    saying it was cut."""
    if len(text) * 9 <= limit or sum(map(cost, text)) <= limit:  # 9: the most any char costs
        return text
    marker = f"… ({len(text)} characters)"
    room = limit - sum(map(cost, marker))
    kept: list[str] = []
    for ch in text:
        room -= cost(ch)
        if room < 0:
            break
        kept.append(ch)
    return "".join(kept) + marker


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", _cut(self.field, FIELD_BYTES))
        object.__setattr__(self, "description", _cut(self.description, DESCRIPTION_BYTES))

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


def _within_budget(violations: list[FieldViolation]) -> list[FieldViolation]:
    kept: list[FieldViolation] = []
    used = 0
    for v in violations:
        used += _utf8(str(v))
        if kept and used > VIOLATIONS_BYTES:
            break
        kept.append(v)
    return kept


def _listing(violations: list[FieldViolation]) -> str:
    """The violations joined as the message, as many as fit its budget, then how many more."""
    parts: list[str] = []
    used = 0
    for v in violations:
        used += sum(map(_wire, f"; {v}"))
        if parts and used > MESSAGE_WIRE_BYTES - 60:
            return "; ".join(parts) + f"; and {len(violations) - len(parts)} more"
        parts.append(str(v))
    return "; ".join(parts)


class FeedbackloopError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        message = _cut(message, MESSAGE_WIRE_BYTES, _wire)
        super().__init__(message)
        self.message = message
        self.violations = _within_budget(violations or [])


class InvalidArgument(FeedbackloopError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one violation")
        violations = [FieldViolation(v.field, v.description) for v in violations]
        super().__init__(_listing(violations), violations)

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(FeedbackloopError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}", [FieldViolation(field, description)])


class AlreadyExists(FeedbackloopError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(FeedbackloopError):
    """The request contradicts stored state (e.g. an idempotency key reused with another payload)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(FeedbackloopError):
    """A concurrent change won (e.g. the live policy revision moved); the caller may re-plan."""

    code = grpc.StatusCode.ABORTED


class Unauthenticated(FeedbackloopError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(FeedbackloopError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(FeedbackloopError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(FeedbackloopError):
    """A limit on work in flight was reached (not the caller's fault); the same call may succeed
    later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Violations:
    """Collects field violations so a request reports every problem at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)
