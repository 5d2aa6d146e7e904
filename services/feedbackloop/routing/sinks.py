"""PromptService, DatasetService and ReviewService: the action sinks' own APIs.

Reviewers claim and resolve with the `ingest` scope: a resolution is feedback (source
REVIEWER) and goes through ingestion's own submit path, so it gets its pipeline job in the
same transaction. `ingest` keys cannot change policies or approve patches (those need `admin`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from sqlalchemy import select

from feedbackloop import auth
from feedbackloop.auth import Scope
from feedbackloop.config import Settings
from feedbackloop.errors import Conflict, InvalidArgument, NotFound
from feedbackloop.ingestion import repository
from feedbackloop.ingestion.convert import feedback_to_proto, interaction_to_proto, timestamp
from feedbackloop.ingestion.repository import TraceIds
from feedbackloop.ingestion.servicer import limits_from
from feedbackloop.ingestion.taxonomy import Taxonomy
from feedbackloop.ingestion.validation import validate_feedback
from feedbackloop.routing.actions import apply_patch
from feedbackloop.routing.events import load_feedback
from feedbackloop.store.db import Database
from feedbackloop.store.models import new_id, utcnow
from feedbackloop.store.routing_models import (
    DatasetItemRow,
    PromptPatchRow,
    PromptState,
    PromptVersion,
    ReviewClaim,
    ReviewItemRow,
)
from feedbackloop.telemetry import current_ids, current_traceparent
from feedbackloop.v1 import (
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    prompts_pb2,
    prompts_pb2_grpc,
    reviews_pb2,
    reviews_pb2_grpc,
)

PROMPTS = "/feedbackloop.v1.PromptService/"
DATASETS = "/feedbackloop.v1.DatasetService/"
REVIEWS = "/feedbackloop.v1.ReviewService/"
REQUIRED_SCOPES = {
    PROMPTS + "GetPrompt": Scope.READ,
    PROMPTS + "ListPatches": Scope.READ,
    PROMPTS + "ApprovePatch": Scope.ADMIN,
    PROMPTS + "RejectPatch": Scope.ADMIN,
    PROMPTS + "RollbackPrompt": Scope.ADMIN,
    DATASETS + "ListItems": Scope.READ,
    DATASETS + "ExportDataset": Scope.READ,
    REVIEWS + "ListReviewItems": Scope.READ,
    REVIEWS + "ClaimReviewItem": Scope.INGEST,
    REVIEWS + "ResolveReviewItem": Scope.INGEST,
}
DEFAULT_PAGE, MAX_PAGE = 50, 500
PATCH_STATUS = {
    "proposed": prompts_pb2.PATCH_STATUS_PROPOSED,
    "applied": prompts_pb2.PATCH_STATUS_APPLIED,
    "rejected": prompts_pb2.PATCH_STATUS_REJECTED,
    "rolled_back": prompts_pb2.PATCH_STATUS_ROLLED_BACK,
}
PATCH_STATUS_NAME = {v: k for k, v in PATCH_STATUS.items()}


def _page(size: int) -> int:
    if size < 0 or size > MAX_PAGE:
        raise InvalidArgument.single("page_size", f"must be between 0 and {MAX_PAGE} (got {size})")
    return size or DEFAULT_PAGE


def _required(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument.single(field, "is required")
    return value


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
    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    def _state(session: Any, project: str, name: str) -> PromptState:
        state = session.scalar(
            select(PromptState).where(PromptState.project_id == project, PromptState.name == name)
        )
        if state is None:
            raise NotFound("name", f'no prompt "{name}"')
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
        name = _required("name", request.name)
        label = request.label or "production"
        with self._db.read() as session:
            state = self._state(session, project, name)
            if label == "production":
                number = state.production_version
            elif label == "latest":
                number = state.latest_version
            elif label.isdigit() and int(label) > 0:
                number = int(label)
            else:
                raise InvalidArgument.single(
                    "label", f'must be "production", "latest" or a version number (got "{label}")'
                )
            version = self._version(session, project, name, number)
            if version is None:
                raise NotFound("label", f'prompt "{name}" has no version {number}')
            return prompts_pb2.GetPromptResponse(prompt=version_to_proto(version, state))

    def ListPatches(
        self, request: prompts_pb2.ListPatchesRequest, context: grpc.ServicerContext
    ) -> prompts_pb2.ListPatchesResponse:
        project = auth.current_principal().project_for(request.project)
        stmt = select(PromptPatchRow).where(PromptPatchRow.project_id == project)
        if request.prompt:
            stmt = stmt.where(PromptPatchRow.prompt == request.prompt)
        if request.status:
            if request.status not in PATCH_STATUS_NAME:
                raise InvalidArgument.single("status", f"unknown value {request.status}")
            stmt = stmt.where(PromptPatchRow.status == PATCH_STATUS_NAME[request.status])
        stmt = stmt.order_by(PromptPatchRow.created_at.desc(), PromptPatchRow.id).limit(
            _page(request.page_size)
        )
        with self._db.read() as session:
            return prompts_pb2.ListPatchesResponse(patches=[patch_to_proto(p) for p in session.scalars(stmt)])

    def _patch(self, session: Any, project: str, patch_id: str) -> PromptPatchRow:
        patch = session.scalar(
            select(PromptPatchRow).where(PromptPatchRow.project_id == project, PromptPatchRow.id == patch_id)
        )
        if patch is None:
            raise NotFound("patch_id", f"no patch {patch_id}")
        return patch

    def ApprovePatch(
        self, request: prompts_pb2.ApprovePatchRequest, context: grpc.ServicerContext
    ) -> prompts_pb2.ApprovePatchResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        _required("patch_id", request.patch_id)
        with self._db.write() as session:
            patch = self._patch(session, project, request.patch_id)
            if patch.status != "proposed":
                raise Conflict(
                    f"patch_id: patch {patch.id} is {patch.status}; only a proposed patch can be approved"
                )
            version = apply_patch(session, patch, principal.key_id)
            session.flush()
            state = self._state(session, project, patch.prompt)
            return prompts_pb2.ApprovePatchResponse(
                patch=patch_to_proto(patch), prompt=version_to_proto(version, state)
            )

    def RejectPatch(
        self, request: prompts_pb2.RejectPatchRequest, context: grpc.ServicerContext
    ) -> prompts_pb2.RejectPatchResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        _required("patch_id", request.patch_id)
        with self._db.write() as session:
            patch = self._patch(session, project, request.patch_id)
            if patch.status != "proposed":
                raise Conflict(
                    f"patch_id: patch {patch.id} is {patch.status}; only a proposed patch can be rejected"
                )
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
        name = _required("name", request.name)
        if request.version < 0:
            raise InvalidArgument.single("version", "must not be negative")
        with self._db.write() as session:
            state = self._state(session, project, name)
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


# --- datasets ---


def item_to_proto(row: DatasetItemRow) -> datasets_pb2.DatasetItem:
    return datasets_pb2.DatasetItem(
        id=row.id,
        dataset=row.dataset,
        input_messages=[
            common_pb2.ChatMessage(role=str(m.get("role", "")), content=str(m.get("content", "")))
            for m in row.input_messages or []
            if isinstance(m, dict)
        ],
        output=row.output,
        ideal_output=row.ideal_output,
        metadata={k: str(v) for k, v in (row.item_metadata or {}).items()},
        source_feedback_ids=list(row.source_feedback_ids or []),
        policy=row.policy,
        created_at=timestamp(row.created_at),
    )


def export_line(row: DatasetItemRow, fmt: int) -> str:
    messages = [
        {"role": str(m.get("role", "user")), "content": str(m.get("content", ""))}
        for m in row.input_messages or []
        if isinstance(m, dict)
    ]
    if fmt == datasets_pb2.EXPORT_FORMAT_PLAIN:
        body: dict[str, Any] = {
            "id": row.id,
            "input": messages,
            "output": row.output,
            "ideal_output": row.ideal_output,
            "metadata": row.item_metadata or {},
            "source_feedback_ids": row.source_feedback_ids or [],
        }
    else:
        body = {"messages": [*messages, {"role": "assistant", "content": row.ideal_output or row.output}]}
    return json.dumps(body, ensure_ascii=False, sort_keys=False)


class DatasetServicer(datasets_pb2_grpc.DatasetServiceServicer):
    def __init__(self, db: Database) -> None:
        self._db = db

    def ListItems(
        self, request: datasets_pb2.ListItemsRequest, context: grpc.ServicerContext
    ) -> datasets_pb2.ListItemsResponse:
        project = auth.current_principal().project_for(request.project)
        dataset = _required("dataset", request.dataset)
        size = _page(request.page_size)
        offset = 0
        if request.page_token:
            if not request.page_token.isdigit():
                raise InvalidArgument.single("page_token", "is not a token from a previous response")
            offset = int(request.page_token)
        with self._db.read() as session:
            rows = session.scalars(
                select(DatasetItemRow)
                .where(DatasetItemRow.project_id == project, DatasetItemRow.dataset == dataset)
                .order_by(DatasetItemRow.created_at, DatasetItemRow.id)
                .offset(offset)
                .limit(size + 1)
            ).all()
        more = len(rows) > size
        return datasets_pb2.ListItemsResponse(
            items=[item_to_proto(r) for r in rows[:size]], next_page_token=str(offset + size) if more else ""
        )

    def ExportDataset(
        self, request: datasets_pb2.ExportDatasetRequest, context: grpc.ServicerContext
    ) -> Iterator[datasets_pb2.ExportDatasetResponse]:
        project = auth.current_principal().project_for(request.project)
        dataset = _required("dataset", request.dataset)
        if request.format not in (
            0,
            datasets_pb2.EXPORT_FORMAT_OPENAI_CHAT,
            datasets_pb2.EXPORT_FORMAT_PLAIN,
        ):
            raise InvalidArgument.single("format", f"unknown value {request.format}")
        offset = 0
        while True:
            with self._db.read() as session:
                rows = session.scalars(
                    select(DatasetItemRow)
                    .where(DatasetItemRow.project_id == project, DatasetItemRow.dataset == dataset)
                    .order_by(DatasetItemRow.created_at, DatasetItemRow.id)
                    .offset(offset)
                    .limit(500)
                ).all()
            for row in rows:
                yield datasets_pb2.ExportDatasetResponse(
                    line=export_line(row, request.format), item_id=row.id
                )
            if len(rows) < 500:
                return
            offset += 500


# --- reviews ---

ITEM_STATUS = {"open": reviews_pb2.REVIEW_ITEM_STATUS_OPEN, "done": reviews_pb2.REVIEW_ITEM_STATUS_DONE}


class ReviewServicer(reviews_pb2_grpc.ReviewServiceServicer):
    def __init__(
        self,
        db: Database,
        settings: Settings,
        taxonomy: Taxonomy,
        on_committed: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._limits = limits_from(settings)
        self._taxonomy = taxonomy
        self._on_committed = on_committed or (lambda: None)
        self.clock = clock

    def _item_to_proto(self, session: Any, row: ReviewItemRow) -> reviews_pb2.ReviewItem:
        out = reviews_pb2.ReviewItem(
            id=row.id,
            queue=row.queue,
            policy=row.policy,
            feedback_id=row.feedback_id,
            group_key=row.group_key,
            evidence_feedback_ids=list(row.evidence or []),
            priority=row.priority,
            due_at=timestamp(row.due_at),
            status=ITEM_STATUS[row.status],
            reviews_required=row.reviews_required,
            reviews_done=row.reviews_done,
            created_at=timestamp(row.created_at),
        )
        fb = load_feedback(session, row.project_id, [row.feedback_id]).get(row.feedback_id)
        if fb is not None:
            out.feedback.CopyFrom(feedback_to_proto(fb))
            if fb.interaction is not None:
                out.interaction.CopyFrom(interaction_to_proto(fb.interaction))
        return out

    def ListReviewItems(
        self, request: reviews_pb2.ListReviewItemsRequest, context: grpc.ServicerContext
    ) -> reviews_pb2.ListReviewItemsResponse:
        project = auth.current_principal().project_for(request.project)
        status = "done" if request.status == reviews_pb2.REVIEW_ITEM_STATUS_DONE else "open"
        stmt = select(ReviewItemRow).where(
            ReviewItemRow.project_id == project, ReviewItemRow.status == status
        )
        if request.queue:
            stmt = stmt.where(ReviewItemRow.queue == request.queue)
        stmt = stmt.order_by(
            ReviewItemRow.priority.desc(), ReviewItemRow.due_at, ReviewItemRow.created_at, ReviewItemRow.id
        ).limit(_page(request.page_size))
        with self._db.read() as session:
            return reviews_pb2.ListReviewItemsResponse(
                items=[self._item_to_proto(session, r) for r in session.scalars(stmt).all()]
            )

    def ClaimReviewItem(
        self, request: reviews_pb2.ClaimReviewItemRequest, context: grpc.ServicerContext
    ) -> reviews_pb2.ClaimReviewItemResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        queue = _required("queue", request.queue)
        reviewer = request.reviewer or principal.key_id
        now = self.clock()
        with self._db.write() as session:
            candidates = session.scalars(
                select(ReviewItemRow)
                .where(
                    ReviewItemRow.project_id == project,
                    ReviewItemRow.queue == queue,
                    ReviewItemRow.status == "open",
                )
                .order_by(
                    ReviewItemRow.priority.desc(),
                    ReviewItemRow.due_at,
                    ReviewItemRow.created_at,
                    ReviewItemRow.id,
                )
                .limit(200)
            ).all()
            for item in candidates:
                if not self._db.is_sqlite:
                    session.refresh(item, with_for_update=True)
                claims = session.scalars(select(ReviewClaim).where(ReviewClaim.item_id == item.id)).all()
                mine = next((c for c in claims if c.reviewer == reviewer), None)
                if mine is not None and mine.status == "resolved":
                    continue
                active_others = sum(
                    1
                    for c in claims
                    if c.reviewer != reviewer and c.status == "claimed" and c.lease_expires_at > now
                )
                if mine is None and item.reviews_done + active_others >= item.reviews_required:
                    continue
                lease = now + timedelta(seconds=item.lease_seconds)
                if mine is None:
                    mine = ReviewClaim(
                        id=new_id("rc"),
                        project_id=project,
                        item_id=item.id,
                        reviewer=reviewer,
                        status="claimed",
                        lease_expires_at=lease,
                        claimed_at=now,
                    )
                    session.add(mine)
                elif mine.lease_expires_at <= now:
                    if item.reviews_done + active_others >= item.reviews_required:
                        continue
                    mine.lease_expires_at = lease
                    mine.claimed_at = now
                return reviews_pb2.ClaimReviewItemResponse(
                    item=self._item_to_proto(session, item),
                    claim_id=mine.id,
                    lease_expires_at=timestamp(mine.lease_expires_at),
                )
        return reviews_pb2.ClaimReviewItemResponse()

    def ResolveReviewItem(
        self, request: reviews_pb2.ResolveReviewItemRequest, context: grpc.ServicerContext
    ) -> reviews_pb2.ResolveReviewItemResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        claim_id = _required("claim_id", request.claim_id)
        thumbs = {
            reviews_pb2.REVIEW_VERDICT_ACCEPT: common_pb2.THUMB_UP,
            reviews_pb2.REVIEW_VERDICT_REJECT: common_pb2.THUMB_DOWN,
        }
        if request.verdict not in thumbs:
            raise InvalidArgument.single("verdict", "must be REVIEW_VERDICT_ACCEPT or REVIEW_VERDICT_REJECT")
        now = self.clock()
        with self._db.read() as session:
            claim = session.scalar(
                select(ReviewClaim).where(ReviewClaim.project_id == project, ReviewClaim.id == claim_id)
            )
            if claim is None:
                raise NotFound("claim_id", f"no claim {claim_id}")
            item = session.get(ReviewItemRow, claim.item_id)
            assert item is not None
            if claim.status == "resolved":
                return reviews_pb2.ResolveReviewItemResponse(
                    feedback_id=claim.feedback_id,
                    reviews_done=item.reviews_done,
                    item_done=item.status == "done",
                )
            if claim.lease_expires_at <= now:
                raise Conflict(
                    f"claim_id: the lease on item {item.id} expired at {claim.lease_expires_at.isoformat()}; "
                    "claim the item again"
                )
            source = load_feedback(session, project, [item.feedback_id])[item.feedback_id]
        message = common_pb2.Feedback(
            session_id=source.session_id,
            interaction_id=source.interaction_id or "",
            thumb=thumbs[request.verdict],
            categories=list(request.categories),
            correction=request.correction,
            comment=request.comment,
            source=common_pb2.FEEDBACK_SOURCE_REVIEWER,
            user=common_pb2.User(id=claim.reviewer, role="reviewer"),
            attributes={"review_item_id": item.id, "review_queue": item.queue, "review_claim_id": claim.id},
            idempotency_key=f"review:{claim.id}",
        )
        data = validate_feedback(
            message, self._limits, now, self._taxonomy.categories_for(project), prefix="review"
        )
        data.origin_policy = item.policy
        trace_id, span_id = current_ids()
        stored = repository.submit_feedback(
            self._db, project, data, TraceIds(trace_id, span_id, current_traceparent())
        )
        with self._db.write() as session:
            claim = session.get(ReviewClaim, claim_id)
            item = session.get(ReviewItemRow, claim.item_id) if claim is not None else None
            assert claim is not None and item is not None
            if claim.status != "resolved":
                claim.status = "resolved"
                claim.verdict = "accept" if request.verdict == reviews_pb2.REVIEW_VERDICT_ACCEPT else "reject"
                claim.feedback_id = stored.id
                claim.resolved_at = now
                item.reviews_done += 1
                if item.reviews_done >= item.reviews_required:
                    item.status = "done"
            done, count = item.status == "done", item.reviews_done
        if stored.created:
            self._on_committed()
        return reviews_pb2.ResolveReviewItemResponse(
            feedback_id=stored.id, reviews_done=count, item_done=done
        )
