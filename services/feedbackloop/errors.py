"""Domain errors that know their gRPC status code.

Servicers raise these and never build statuses by hand; `interceptors.ErrorMappingInterceptor`
turns them into a rich status (with `google.rpc.BadRequest` field violations for invalid
arguments) whose message carries the same text, so clients without rich-status support still
see which field was wrong and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class FeedbackloopError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations or []


class InvalidArgument(FeedbackloopError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one violation")
        super().__init__("; ".join(str(v) for v in violations), violations)

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
