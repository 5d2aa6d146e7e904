"""PromptService: the effective prompt versions, and patches to approve, reject or roll back."""

from __future__ import annotations

from typing import Any

import grpc
from sqlalchemy import select

from feedbackloop import auth, fields
from feedbackloop.auth import Scope
from feedbackloop.errors import Conflict, InvalidArgument, NotFound, Violations, quote
from feedbackloop.ingestion.convert import timestamp
from feedbackloop.paging import SortKey, filter_digest, page
from feedbackloop.routing.actions import apply_patch
from feedbackloop.routing.sink_common import PageLimits, optional, required
from feedbackloop.store.db import Database
from feedbackloop.store.models import utcnow
from feedbackloop.store.routing_models import (
    PromptPatchRow,
    PromptState,
    PromptVersion,
)
from feedbackloop.v1 import (
    prompts_pb2,
    prompts_pb2_grpc,
)

SERVICE = "/feedbackloop.v1.PromptService/"
REQUIRED_SCOPES = {
    SERVICE + "GetPrompt": Scope.READ,
    SERVICE + "ListPatches": Scope.READ,
    SERVICE + "ApprovePatch": Scope.ADMIN,
    SERVICE + "RejectPatch": Scope.ADMIN,
    SERVICE + "RollbackPrompt": Scope.ADMIN,
}
PATCH_STATUS = {
    "proposed": prompts_pb2.PATCH_STATUS_PROPOSED,
    "applied": prompts_pb2.PATCH_STATUS_APPLIED,
    "rejected": prompts_pb2.PATCH_STATUS_REJECTED,
    "rolled_back": prompts_pb2.PATCH_STATUS_ROLLED_BACK,
}
PATCH_STATUS_NAME = {v: k for k, v in PATCH_STATUS.items()}
PATCH_ORDER = (SortKey(PromptPatchRow.created_at, descending=True), SortKey(PromptPatchRow.id))
MAX_REASON_CHARS = 4096
LABEL_RULE = '"production", "latest" or a version number from 1 to 2147483647'


# --- prompts ---


def version_to_proto(v: PromptVersion, state: PromptState) -> prompts_pb2.PromptVersion:
    return prompts_pb2.PromptVersion(
        name=v.name,
        version=v.version,
        template=v.template,
        production=v.version == state.production_version,
        origin=v.origin,
        patch_id=v.patch_id,
        created_at=timestamp(v.created_at),
        production_version=state.production_version,
        latest_version=state.latest_version,
    )


def patch_to_proto(p: PromptPatchRow) -> prompts_pb2.PromptPatch:
    out = prompts_pb2.PromptPatch(
        id=p.id,
        prompt=p.prompt,
        policy=p.policy,
        strategy=p.strategy,
        status=PATCH_STATUS[p.status],
        content=p.content,
        evidence_feedback_ids=list(p.evidence or []),
        revision=p.revision,
        result_version=p.result_version,
        created_at=timestamp(p.created_at),
        decided_by=p.decided_by,
        note=p.note,
    )
    if p.decided_at is not None:
        out.decided_at.CopyFrom(timestamp(p.decided_at))
    return out


class PromptServicer(prompts_pb2_grpc.PromptServiceServicer):
    def __init__(self, db: Database, pages: PageLimits | None = None) -> None:
        self._db = db
        self._pages = pages or PageLimits()

    @staticmethod
    def _state(session: Any, project: str, name: str) -> PromptState:
        state = session.scalar(
            select(PromptState).where(PromptState.project_id == project, PromptState.name == name)
        )
        if state is None:
            raise NotFound("name", f'no prompt "{quote(name)}"')
        return state

    @classmethod
    def _served_state(cls, session: Any, project: str, name: str, field: str = "name") -> PromptState:
        """The prompt's state, refused once the live policy set no longer defines the prompt."""
        state = cls._state(session, project, name)
        if state.removed_in_revision is not None:
            raise NotFound(
                field,
                f'prompt "{name}" was removed by policy revision {state.removed_in_revision}; '
                "apply a policy set that defines it to serve it again",
            )
        return state

    @staticmethod
    def _version(session: Any, project: str, name: str, version: int) -> PromptVersion | None:
        return session.scalar(
            select(PromptVersion).where(
                PromptVersion.project_id == project,
                PromptVersion.name == name,
                PromptVersion.version == version,
            )
        )

    def GetPrompt(
        self, request: prompts_pb2.GetPromptRequest, context: grpc.ServicerContext
    ) -> prompts_pb2.GetPromptResponse:
        project = auth.current_principal().project_for(request.project)
        name = required("name", request.name)
        label = request.label or "production"
        # Checked before the store is read: a number past the version column's range would fail
        # in the store, and an unknown prompt should not hide a malformed label.
        pinned = fields.decimal_label(label) if label not in ("production", "latest") else None
        if label not in ("production", "latest") and pinned is None:
            raise InvalidArgument.single("label", f'must be {LABEL_RULE} (got "{quote(label)}")')
        with self._db.read() as session:
            state = self._served_state(session, project, name)
            if label == "production":
                number = state.production_version
            elif label == "latest":
                number = state.latest_version
            else:
                assert pinned is not None
                number = pinned
            version = self._version(session, project, name, number)
            if version is None:
                raise NotFound("label", f'prompt "{name}" has no version {number}')
            return prompts_pb2.GetPromptResponse(prompt=version_to_proto(version, state))

    def ListPatches(
        self, request: prompts_pb2.ListPatchesRequest, context: grpc.ServicerContext
    ) -> prompts_pb2.ListPatchesResponse:
        project = auth.current_principal().project_for(request.project)
        optional("prompt", request.prompt)
        stmt = select(PromptPatchRow).where(PromptPatchRow.project_id == project)
        if request.prompt:
            stmt = stmt.where(PromptPatchRow.prompt == request.prompt)
        if request.status:
            if request.status not in PATCH_STATUS_NAME:
                raise InvalidArgument.single("status", f"unknown value {request.status}")
            stmt = stmt.where(PromptPatchRow.status == PATCH_STATUS_NAME[request.status])
        with self._db.read() as session:
            patches, next_token = page(
                session,
                stmt,
                PATCH_ORDER,
                size=self._pages.size(request.page_size),
                token=request.page_token,
                digest=filter_digest(request),
            )
            return prompts_pb2.ListPatchesResponse(
                patches=[patch_to_proto(p) for p in patches], next_page_token=next_token
            )

    @staticmethod
    def _proposed_patch(session: Any, project: str, patch_id: str, verb: str) -> PromptPatchRow:
        """The patch to decide on; only a proposed patch can be approved or rejected."""
        required("patch_id", patch_id)
        patch = session.scalar(
            select(PromptPatchRow).where(PromptPatchRow.project_id == project, PromptPatchRow.id == patch_id)
        )
        if patch is None:
            raise NotFound("patch_id", f"no patch {patch_id}")
        if patch.status != "proposed":
            raise Conflict(
                f"patch_id: patch {patch.id} is {patch.status}; only a proposed patch can be {verb}"
            )
        return patch

    def ApprovePatch(
        self, request: prompts_pb2.ApprovePatchRequest, context: grpc.ServicerContext
    ) -> prompts_pb2.ApprovePatchResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        with self._db.write() as session:
            patch = self._proposed_patch(session, project, request.patch_id, "approved")
            state = self._served_state(session, project, patch.prompt, field="patch_id")
            version = apply_patch(session, patch, principal.key_id)
            session.flush()
            return prompts_pb2.ApprovePatchResponse(
                patch=patch_to_proto(patch), prompt=version_to_proto(version, state)
            )

    def RejectPatch(
        self, request: prompts_pb2.RejectPatchRequest, context: grpc.ServicerContext
    ) -> prompts_pb2.RejectPatchResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        with self._db.write() as session:
            v = Violations()
            fields.text(v, "reason", request.reason, MAX_REASON_CHARS)
            v.raise_if_any()
            patch = self._proposed_patch(session, project, request.patch_id, "rejected")
            patch.status = "rejected"
            patch.note = request.reason
            patch.decided_by = principal.key_id
            patch.decided_at = utcnow()
            return prompts_pb2.RejectPatchResponse(patch=patch_to_proto(patch))

    def RollbackPrompt(
        self, request: prompts_pb2.RollbackPromptRequest, context: grpc.ServicerContext
    ) -> prompts_pb2.RollbackPromptResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        name = required("name", request.name)
        if request.version < 0:
            raise InvalidArgument.single("version", "must not be negative")
        with self._db.write() as session:
            state = self._served_state(session, project, name)
            target = request.version or state.production_version - 1
            if target < 1:
                raise Conflict(
                    f"version: prompt {name} is at version {state.production_version}; nothing to roll back to"
                )
            if target >= state.production_version and request.version:
                raise InvalidArgument.single(
                    "version", f"must be older than the production version {state.production_version}"
                )
            version = self._version(session, project, name, target)
            if version is None:
                raise NotFound("version", f'prompt "{name}" has no version {target}')
            undone = session.scalars(
                select(PromptPatchRow).where(
                    PromptPatchRow.project_id == project,
                    PromptPatchRow.prompt == name,
                    PromptPatchRow.status == "applied",
                    PromptPatchRow.result_version > target,
                )
            ).all()
            for patch in undone:
                patch.status = "rolled_back"
                patch.decided_by = principal.key_id
                patch.decided_at = utcnow()
            state.production_version = target
            state.updated_at = utcnow()
            return prompts_pb2.RollbackPromptResponse(
                prompt=version_to_proto(version, state), rolled_back_patch_ids=[p.id for p in undone]
            )
