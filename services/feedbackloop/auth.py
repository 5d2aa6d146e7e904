"""API keys, scopes and the request's principal.

Keys look like `fbl_<id>_<secret>`; only the SHA-256 of the whole key is stored, so a leaked
database does not leak usable keys. The id part lets logs name a key without revealing it.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import re
import secrets
from dataclasses import dataclass

from feedbackloop.errors import PermissionDenied, Unauthenticated, quote

KEY_PREFIX = "fbl"
# A presigned feedback token (`feedback_tokens.py`) reads `fbt_<secret>`: the prefix tells it from
# an API key before any lookup, and it may call these methods alone.
FEEDBACK_TOKEN_PREFIX = "fbt_"
FEEDBACK_TOKEN_METHODS = frozenset({"/feedbackloop.v1.IngestionService/SubmitFeedback"})


class Scope(enum.StrEnum):
    """What a key may do; `admin` implies every other scope.

    `review` is apart from `ingest` because claiming an item reads its queued feedback and
    interaction; `policy` (validate and plan a policy set) is apart from `read` because both
    compile and backtest caller-supplied rules; `evaluate` lets an automated judge submit
    feedback with source EVALUATOR.
    """

    INGEST = "ingest"
    READ = "read"
    REVIEW = "review"
    POLICY = "policy"
    EVALUATE = "evaluate"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


# The reviewer identity of a key that names none: its key id, in a namespace no reviewer name
# can reach (`names.REVIEWER` has no ':'), so a named reviewer can never pass for a key.
KEY_REVIEWER_PREFIX = "key:"


@dataclass(frozen=True)
class Principal:
    project_id: str
    scopes: frozenset[Scope]
    key_id: str  # "anonymous" for the loopback development default
    # The reviewer identity bound to the key (`keys create --reviewer`); "" when it names none.
    reviewer: str = ""
    # Set for a feedback token: the one interaction it may submit feedback on ("" for a key).
    feedback_interaction: str = ""

    @property
    def reviewer_identity(self) -> str:
        """Who this principal reviews as: one key is one reviewer, whatever its requests say."""
        return self.reviewer or f"{KEY_REVIEWER_PREFIX}{self.key_id}"

    def reviewer_for(self, requested: str, field: str = "reviewer") -> str:
        """The identity a review request acts as; the request may only repeat it.

        Independent reviews are told apart by identity, so a request naming somebody else is
        refused rather than ignored: a client that thinks it can speak for several reviewers
        learns that it cannot.
        """
        identity = self.reviewer_identity
        if requested and requested != identity:
            raise PermissionDenied(
                f"{field}: this API key reviews as '{identity}' and cannot review as someone else"
            )
        return identity

    def require_feedback_target(self, interaction_id: str, has_span: bool) -> None:
        """Refuse feedback a feedback token may not submit: anything but its own interaction."""
        if not self.feedback_interaction:
            return
        if interaction_id != self.feedback_interaction or has_span:
            raise PermissionDenied(
                "feedback.interaction_id: this feedback token submits feedback on interaction "
                f"'{self.feedback_interaction}' only"
            )

    def allows(self, scope: Scope) -> bool:
        # admin implies every other scope: an operator key must be able to do what it manages.
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def require(self, scope: Scope) -> None:
        if not self.allows(scope):
            raise PermissionDenied(f"this API key lacks the '{scope}' scope")

    def project_for(self, requested: str) -> str:
        """The project a request acts in: its own `project` field, or the key's project."""
        if requested and requested != self.project_id:
            raise PermissionDenied(
                f"project: this API key belongs to project '{self.project_id}', not '{quote(requested)}'"
            )
        return self.project_id


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal:
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no principal on this request")
    return principal


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _current.reset(token)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new (key_id, full_key); the full key is shown once and never stored."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


# A key given to `keys ensure` (from a Secret) must look like a generated one, so that its id
# can be read off it: the id names the key in logs and in `keys list` / `keys revoke`.
_GIVEN_KEY = re.compile(rf"{KEY_PREFIX}_([a-z0-9]{{6,32}})_([A-Za-z0-9_-]{{32,256}})")


def key_id_of(key: str) -> str:
    """The id part of a key of the generated form; ValueError (never echoing the key) otherwise."""
    match = _GIVEN_KEY.fullmatch(key)
    if match is None:
        raise ValueError(
            f"not a key of the form {KEY_PREFIX}_<id>_<secret>: the id 6 to 32 lowercase letters or digits, "
            "the secret 32 to 256 letters, digits, '_' or '-'"
        )
    return match.group(1)


def parse_scopes(raw: list[str] | str) -> frozenset[Scope]:
    names = raw.split() if isinstance(raw, str) else raw
    scopes = set()
    for name in names:
        try:
            scopes.add(Scope(name))
        except ValueError:
            valid = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope '{name}' (valid: {valid})") from None
    return frozenset(scopes)


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <key>'")
            return token.strip()
    return None
