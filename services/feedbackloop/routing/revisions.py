"""Policy revisions: atomic, versioned apply; history; rollback; the live compiled set.

The live revision of a project is its highest revision number. An apply inserts revision
N+1 in one transaction together with the prompt versions the set implies; the unique
(project, revision) constraint makes two concurrent applies on the same base serialize: one
commits, the other fails and is answered ABORTED. Nothing of a refused apply is stored.

`LivePolicies` caches the compiled set per project. Compilation happens once per revision,
outside any lock, and the (revision, compiled set) pair is swapped in one assignment, so the
route stage never sees a half-built set. Each pipeline batch asks the store for the live
revision number (one indexed query), so every process switches to a new revision without a
restart, whichever process applied it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedbackloop.errors import Aborted, NotFound
from feedbackloop.ingestion.taxonomy import Taxonomy
from feedbackloop.paging import SortKey, page
from feedbackloop.policy import CompiledPolicySet, PolicySet, allowed_categories
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project_in
from feedbackloop.store.models import new_id, utcnow
from feedbackloop.store.routing_models import PolicyRevision, PromptState, PromptVersion

log = logging.getLogger(__name__)

KIND_APPLY, KIND_ROLLBACK, KIND_BOOTSTRAP = "apply", "rollback", "bootstrap"


@dataclass(frozen=True)
class LiveSet:
    revision: int
    policy_set: PolicySet
    compiled: CompiledPolicySet


@dataclass(frozen=True)
class RevisionInfo:
    revision: int
    content_hash: str
    kind: str
    source_revision: int
    applied_by: str
    applied_at: datetime
    message: str
    resource_count: int
    canonical: dict


def _info(row: PolicyRevision) -> RevisionInfo:
    return RevisionInfo(
        row.revision,
        row.content_hash,
        row.kind,
        row.source_revision,
        row.applied_by,
        row.applied_at,
        row.message,
        len(row.canonical.get("resources", [])),
        row.canonical,
    )


def live_revision_number(session: Session, project_id: str) -> int:
    value = session.scalar(
        select(func.max(PolicyRevision.revision)).where(PolicyRevision.project_id == project_id)
    )
    return int(value or 0)


def get_revision(db: Database, project_id: str, revision: int = 0) -> RevisionInfo:
    """One revision; 0 means the live one."""
    with db.read() as session:
        number = revision or live_revision_number(session, project_id)
        row = session.scalar(
            select(PolicyRevision).where(
                PolicyRevision.project_id == project_id, PolicyRevision.revision == number
            )
        )
        if row is None:
            what = f"no revision {revision}" if revision else "no policy revision is applied yet"
            raise NotFound("revision", what)
        return _info(row)


REVISION_ORDER = (SortKey(PolicyRevision.revision, descending=True),)


def list_revisions(
    db: Database, project_id: str, size: int, token: str, digest: str
) -> tuple[list[RevisionInfo], int, str]:
    """A page of revisions, newest first: (revisions, live revision number, next page token)."""
    with db.read() as session:
        rows, next_token = page(
            session,
            select(PolicyRevision).where(PolicyRevision.project_id == project_id),
            REVISION_ORDER,
            size=size,
            token=token,
            digest=digest,
        )
        return [_info(r) for r in rows], live_revision_number(session, project_id), next_token


def _sync_prompts(session: Session, project_id: str, policy_set: PolicySet, revision: int) -> None:
    """Version 1 of a prompt is its policy template; a changed policy template is a new version
    that becomes production (patches made on the old template stay in the history). A prompt
    the set no longer defines is marked removed (no longer served); defining it again restores it."""
    states = {
        s.name: s for s in session.scalars(select(PromptState).where(PromptState.project_id == project_id))
    }
    for existing in states.values():
        removed = existing.name not in policy_set.prompts
        if removed != (existing.removed_in_revision is not None):
            existing.removed_in_revision = revision if removed else None
            existing.updated_at = utcnow()
    for name, prompt in policy_set.prompts.items():
        state = states.get(name)
        if state is None:
            session.add(PromptState(id=new_id("pr"), project_id=project_id, name=name))
            session.add(
                PromptVersion(
                    id=new_id("pv"),
                    project_id=project_id,
                    name=name,
                    version=1,
                    template=prompt.template,
                    origin="policy",
                    revision=revision,
                )
            )
            continue
        last_policy = session.scalar(
            select(PromptVersion)
            .where(
                PromptVersion.project_id == project_id,
                PromptVersion.name == name,
                PromptVersion.origin == "policy",
            )
            .order_by(PromptVersion.version.desc())
            .limit(1)
        )
        if last_policy is not None and last_policy.template == prompt.template:
            continue
        state.latest_version += 1
        state.production_version = state.latest_version
        state.updated_at = utcnow()
        session.add(
            PromptVersion(
                id=new_id("pv"),
                project_id=project_id,
                name=name,
                version=state.latest_version,
                template=prompt.template,
                origin="policy",
                revision=revision,
            )
        )


class LivePolicies:
    """The compiled live revision per project, swapped atomically; installs the taxonomy."""

    def __init__(self, db: Database, taxonomy: Taxonomy | None = None) -> None:
        self._db = db
        self._taxonomy = taxonomy
        self._live: dict[str, LiveSet | None] = {}
        self._compiled: dict[tuple[str, int], LiveSet] = {}
        self._lock = threading.Lock()

    def get(self, project_id: str) -> LiveSet | None:
        """The cached live set; loads it on first use."""
        if project_id in self._live:
            return self._live[project_id]
        return self.refresh(project_id)

    def refresh(self, project_id: str) -> LiveSet | None:
        """Re-read the live revision number and switch if it moved (cheap when it did not)."""
        with self._db.read() as session:
            number = live_revision_number(session, project_id)
        current = self._live.get(project_id)
        if current is not None and current.revision == number:
            return current
        if number == 0:
            self._install(project_id, None)
            return None
        return self.load(project_id, number)

    def load(self, project_id: str, revision: int) -> LiveSet:
        """Compile (once) and install `revision` as live if it is newer than what is cached."""
        live = self.compiled(project_id, revision)
        with self._lock:
            current = self._live.get(project_id)
            if current is None or current.revision <= revision:
                self._install(project_id, live)
            return self._live[project_id] or live

    def compiled(self, project_id: str, revision: int) -> LiveSet:
        """Any revision, compiled once and cached (Evaluate with an explicit revision uses it)."""
        key = (project_id, revision)
        cached = self._compiled.get(key)
        if cached is not None:
            return cached
        info = get_revision(self._db, project_id, revision)
        policy_set = PolicySet.from_canonical(info.canonical)
        live = LiveSet(revision, policy_set, CompiledPolicySet.from_policy_set(policy_set))
        self._compiled[key] = live
        return live

    def _install(self, project_id: str, live: LiveSet | None) -> None:
        self._live[project_id] = live
        if self._taxonomy is not None:
            schema = live.policy_set.feedback_schema if live is not None else None
            categories = allowed_categories(schema) if schema is not None else None
            self._taxonomy.install(project_id, frozenset(categories) if categories is not None else None)

    def projects_with_revisions(self) -> list[str]:
        with self._db.read() as session:
            return list(session.scalars(select(PolicyRevision.project_id).distinct()))

    # --- changes ---

    def apply(
        self,
        project_id: str,
        policy_set: PolicySet,
        *,
        expected_revision: int | None,
        applied_by: str,
        kind: str = KIND_APPLY,
        source_revision: int = 0,
        message: str = "",
    ) -> tuple[RevisionInfo, bool]:
        """Store `policy_set` as the next revision; (revision, changed).

        Refused with Aborted when `expected_revision` is set and is not the live revision, or
        when a concurrent apply commits first. An apply of the live content makes no revision.
        """
        # Compile before touching the store: a set that cannot compile is never stored.
        compiled = CompiledPolicySet.from_policy_set(policy_set)
        content_hash = policy_set.content_hash()
        try:
            with self._db.write() as session:
                ensure_project_in(session, project_id)
                live = live_revision_number(session, project_id)
                if expected_revision is not None and expected_revision != live:
                    raise Aborted(
                        f"the live policy revision is {live}, not {expected_revision}: it moved since the "
                        "plan was made; run plan again"
                    )
                if live and kind == KIND_APPLY:
                    row = session.scalar(
                        select(PolicyRevision).where(
                            PolicyRevision.project_id == project_id, PolicyRevision.revision == live
                        )
                    )
                    if row is not None and row.content_hash == content_hash:
                        return _info(row), False
                row = PolicyRevision(
                    id=new_id("rev"),
                    project_id=project_id,
                    revision=live + 1,
                    content_hash=content_hash,
                    canonical=policy_set.to_canonical(),
                    kind=kind,
                    source_revision=source_revision,
                    applied_by=applied_by,
                    message=message,
                    applied_at=utcnow(),
                )
                session.add(row)
                session.flush()
                _sync_prompts(session, project_id, policy_set, live + 1)
                info = _info(row)
        except IntegrityError:
            raise Aborted(
                f"a concurrent apply created the next policy revision first (base was {expected_revision}); "
                "run plan again"
            ) from None
        live_set = LiveSet(info.revision, policy_set, compiled)
        self._compiled[(project_id, info.revision)] = live_set
        self.load(project_id, info.revision)
        log.info("project %s: policy revision %d applied by %s", project_id, info.revision, applied_by)
        return info, True

    def rollback(
        self, project_id: str, revision: int, *, applied_by: str, expected_revision: int | None = None
    ) -> RevisionInfo:
        if not revision:
            raise NotFound("revision", "is required")
        target = get_revision(self._db, project_id, revision)
        policy_set = PolicySet.from_canonical(target.canonical)
        info, _ = self.apply(
            project_id,
            policy_set,
            expected_revision=expected_revision,
            applied_by=applied_by,
            kind=KIND_ROLLBACK,
            source_revision=revision,
            message=f"rollback to revision {revision}",
        )
        return info
