"""Presigned feedback tokens: an application server mints one for an interaction and hands it
to its end user's browser, which may then submit feedback on that interaction alone.

The token is `fbt_<random>`; only its SHA-256 is stored, in the relational store, so every api
replica accepts a token any replica minted. A token works until it expires or until the key
that minted it is revoked: a leaked application key is cut off with everything it signed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from feedbackloop import auth, fields
from feedbackloop.auth import Principal, Scope
from feedbackloop.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from feedbackloop.store.db import Database
from feedbackloop.store.models import ApiKey, FeedbackToken, Interaction

DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 86400
# An expired token is kept this long, so that its holder hears "expired" rather than "invalid";
# minting removes those older than that, so the table holds about a day's tokens.
EXPIRED_KEPT = timedelta(days=1)
# Longer than any token this module mints; a longer bearer value is not looked up.
MAX_TOKEN_CHARS = 128
IDEMPOTENCY_PREFIX = "fbt:"


@dataclass(frozen=True)
class Minted:
    token: str
    expires_at: datetime


def ttl_of(requested: int) -> timedelta:
    """The lifetime a request's ttl_seconds asks for (0: the default)."""
    if requested == 0:
        return timedelta(seconds=DEFAULT_TTL_SECONDS)
    if not 1 <= requested <= MAX_TTL_SECONDS:
        raise InvalidArgument.single(
            "ttl_seconds",
            f"must be between 1 and {MAX_TTL_SECONDS} seconds, or 0 for {DEFAULT_TTL_SECONDS} (got {requested})",
        )
    return timedelta(seconds=requested)


def mint(
    db: Database, principal: Principal, project_id: str, interaction_id: str, ttl_seconds: int, now: datetime
) -> Minted:
    """A new token for `interaction_id` of `project_id`, minted by `principal`'s key."""
    if principal.feedback_interaction:
        raise PermissionDenied("a feedback token cannot mint feedback tokens")
    fields.require_id("interaction_id", interaction_id)
    expires_at = now + ttl_of(ttl_seconds)
    token = auth.FEEDBACK_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.write() as session:
        found = session.scalar(
            select(Interaction.id).where(
                Interaction.project_id == project_id, Interaction.id == interaction_id
            )
        )
        if found is None:
            raise NotFound("interaction_id", f"no interaction '{interaction_id}' in this project")
        session.execute(delete(FeedbackToken).where(FeedbackToken.expires_at < now - EXPIRED_KEPT))
        session.add(
            FeedbackToken(
                token_hash=auth.hash_key(token),
                project_id=project_id,
                interaction_id=interaction_id,
                key_id=principal.key_id,
                created_at=now,
                expires_at=expires_at,
            )
        )
    return Minted(token, expires_at)


def scoped_idempotency_key(principal: Principal, key: str | None) -> str | None:
    """The idempotency key feedback submitted with `principal` is stored under.

    Keys are unique per project, and a token is held by an end user's browser: a key it sent
    as is could take one the application or an evaluator will use (`otlp-eval:<trace>:...` is
    predictable), which would then be refused as a conflict or answered with the browser's
    feedback. A token's keys live in their interaction's own namespace instead; the key's
    digest keeps the stored key within the column however long the interaction id is.
    """
    if not key or not principal.feedback_interaction:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{IDEMPOTENCY_PREFIX}{principal.feedback_interaction}:{digest}"


def resolve(db: Database, token: str, now: datetime, anonymous: Principal | None) -> Principal:
    """The principal a token stands for: scope `ingest`, held to its one interaction.

    `anonymous` is the server's keyless principal, if it has one: a token minted without a key
    works only on a server that still takes keyless requests for that project.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated("invalid feedback token")
    with db.read() as session:
        row = session.execute(
            select(FeedbackToken, ApiKey.revoked_at, ApiKey.id)
            .outerjoin(ApiKey, ApiKey.id == FeedbackToken.key_id)
            .where(FeedbackToken.token_hash == auth.hash_key(token))
        ).first()
    if row is None:
        raise Unauthenticated("invalid feedback token")
    stored, revoked_at, key_row_id = row
    if stored.expires_at <= now:
        raise Unauthenticated("feedback token expired")
    if stored.key_id == "anonymous" and key_row_id is None:
        if anonymous is None or anonymous.project_id != stored.project_id:
            raise Unauthenticated("feedback token minted without an API key, and this server requires keys")
    elif key_row_id is None or revoked_at is not None:
        raise Unauthenticated("the API key that minted this feedback token was revoked")
    return Principal(
        project_id=stored.project_id,
        scopes=frozenset({Scope.INGEST}),
        key_id=stored.key_id,
        feedback_interaction=stored.interaction_id,
    )
