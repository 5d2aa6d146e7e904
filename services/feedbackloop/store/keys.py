"""Projects and API keys.

Project ids and reviewer names are checked here (`names`), where they enter the store, so a
key can never be made for a project that later breaks a search, nor for a reviewer that could
pass for another key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedbackloop import auth, names
from feedbackloop.store.db import Database
from feedbackloop.store.models import ApiKey, Project, utcnow


@dataclass(frozen=True)
class KeyInfo:
    id: str
    project_id: str
    scopes: str
    description: str
    reviewer: str
    created_at: datetime
    revoked_at: datetime | None


def ensure_project(db: Database, project_id: str) -> None:
    with db.write() as session:
        ensure_project_in(session, project_id)


def ensure_project_in(session: Session, project_id: str) -> None:
    """Create the project row inside the caller's transaction if it is missing.

    A malformed id is refused (ValueError), unless the project was stored before the rule
    existed: its keys keep working.
    """
    try:
        names.check_project_id(project_id)
    except ValueError:
        # NUL never reached the store (PostgreSQL refuses it even in a lookup).
        if "\x00" in project_id or session.get(Project, project_id) is None:
            raise
        return
    if session.get(Project, project_id) is None:
        session.add(Project(id=project_id))
        session.flush()


def create_key(
    db: Database,
    project_id: str,
    scopes: frozenset[auth.Scope],
    description: str = "",
    reviewer: str = "",
) -> str:
    """Create a key and return it; only its hash is stored, so this is the one chance to see it.

    `reviewer` binds the reviewer identity the key's reviews are recorded under; without one the
    key reviews as `key:<id>`. ValueError names what is wrong (project, scopes, reviewer).
    """
    names.check_project_id(project_id)
    if not scopes:
        raise ValueError("a key needs at least one scope")
    if reviewer:
        names.check_reviewer(reviewer)
    key_id, key = auth.generate_key()
    with db.write() as session:
        ensure_project_in(session, project_id)
        session.add(
            ApiKey(
                id=key_id,
                project_id=project_id,
                key_hash=auth.hash_key(key),
                scopes=" ".join(sorted(scopes)),
                description=description,
                reviewer=reviewer,
            )
        )
    return key


def ensure_key(
    db: Database,
    key: str,
    project_id: str,
    scopes: frozenset[auth.Scope],
    description: str = "",
    reviewer: str = "",
) -> tuple[str, bool]:
    """Register a key the caller already holds (a deployment's bootstrap key, kept in a Secret);
    (key id, created). Running it again is a no-op, so a deployment hook can run it on every upgrade.

    ValueError, naming the key by its id only, when the key is malformed, revoked, registered with
    another project, scopes or reviewer, or when its id belongs to another key.
    """
    key_id = auth.key_id_of(key)
    names.check_project_id(project_id)
    if not scopes:
        raise ValueError("a key needs at least one scope")
    if reviewer:
        names.check_reviewer(reviewer)
    digest = auth.hash_key(key)
    wanted = " ".join(sorted(scopes))
    for attempt in range(2):  # a second pass reads the row a concurrent run inserted first
        try:
            with db.write() as session:
                row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
                if row is not None:
                    if row.revoked_at is not None:
                        raise ValueError(f"key {row.id} was revoked; put a new key in its place")
                    if (row.project_id, row.scopes, row.reviewer) != (project_id, wanted, reviewer):
                        reviews_as = f", reviewer {row.reviewer}" if row.reviewer else ""
                        raise ValueError(
                            f"key {row.id} exists with project {row.project_id}, scopes {row.scopes}"
                            f"{reviews_as}; revoke it to change them"
                        )
                    return row.id, False
                if session.get(ApiKey, key_id) is not None:
                    raise ValueError(f"key id {key_id} belongs to another key")
                ensure_project_in(session, project_id)
                session.add(
                    ApiKey(
                        id=key_id,
                        project_id=project_id,
                        key_hash=digest,
                        scopes=wanted,
                        description=description,
                        reviewer=reviewer,
                    )
                )
                session.flush()
                return key_id, True
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def principal_for_hash(db: Database, key_hash: str) -> auth.Principal | None:
    with db.read() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))
        if row is None:
            return None
        return auth.Principal(
            project_id=row.project_id,
            scopes=auth.parse_scopes(row.scopes),
            key_id=row.id,
            reviewer=row.reviewer,
        )


def list_keys(db: Database, project_id: str | None = None) -> list[KeyInfo]:
    with db.read() as session:
        stmt = select(ApiKey).order_by(ApiKey.created_at)
        if project_id:
            stmt = stmt.where(ApiKey.project_id == project_id)
        return [
            KeyInfo(k.id, k.project_id, k.scopes, k.description, k.reviewer, k.created_at, k.revoked_at)
            for k in session.scalars(stmt)
        ]


def revoke_key(db: Database, key_id: str) -> bool:
    with db.write() as session:
        row = session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        return True


def active_key_count(db: Database) -> int:
    with db.read() as session:
        return (
            session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0
        )
