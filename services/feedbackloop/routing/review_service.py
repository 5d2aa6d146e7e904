"""ReviewService: human review queues (list, claim with a lease, renew or release it, resolve,
and each queue's progress).

A resolution re-enters the pipeline as feedback from the reviewer. Who reviewed is the key's
reviewer identity (`Principal.reviewer_identity`), never a name the request makes up, so
independent reviews really come from distinct keys, and a claim is resolved only by its owner.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from sqlalchemy import and_, case, exists, func, select

from feedbackloop import auth
from feedbackloop.auth import Scope
from feedbackloop.config import Settings
from feedbackloop.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from feedbackloop.ingestion import repository
from feedbackloop.ingestion.convert import feedback_to_proto, interaction_to_proto, timestamp
from feedbackloop.ingestion.provenance import REVIEWER
from feedbackloop.ingestion.repository import TraceIds
from feedbackloop.ingestion.servicer import limits_from
from feedbackloop.ingestion.taxonomy import Taxonomy
from feedbackloop.ingestion.validation import validate_feedback
from feedbackloop.paging import SortKey, filter_digest, page
from feedbackloop.routing.actions import issue_group_of
from feedbackloop.routing.sink_common import PageLimits, live_names, optional, require_known, required
from feedbackloop.store.db import Database
from feedbackloop.store.lookups import feedback_by_ids
from feedbackloop.store.models import Feedback, new_id
from feedbackloop.store.routing_models import (
    ReviewClaim,
    ReviewItemRow,
)
from feedbackloop.telemetry import current_ids, current_traceparent
from feedbackloop.v1 import (
    common_pb2,
    reviews_pb2,
    reviews_pb2_grpc,
)

SERVICE = "/feedbackloop.v1.ReviewService/"
# Claiming shows an item's feedback and interaction, and resolving writes REVIEWER feedback
# (through ingestion's submit path, so its pipeline job commits with it): both are `review`, a
# scope an ingest key lacks. Listing a queue is reading data, as ListFeedback is; a reviewer
# needs no `read` to work (claim hands out the next item), and a key without `read` cannot list
# other reviewers' verdicts, which keeps reviews blind.
REQUIRED_SCOPES = {
    SERVICE + "ListReviewItems": Scope.READ,
    SERVICE + "ClaimReviewItem": Scope.REVIEW,
    SERVICE + "ResolveReviewItem": Scope.REVIEW,
    SERVICE + "ReleaseReviewClaim": Scope.REVIEW,
    SERVICE + "RenewReviewClaim": Scope.REVIEW,
    # Counts only, but of every reviewer's work: reading, as listing is.
    SERVICE + "GetReviewQueueStats": Scope.READ,
}
# A skip list comes from one reviewer's session in a page; a longer one is a client bug.
MAX_SKIP_ITEMS = 100


# --- reviews ---

ITEM_STATUS = {"open": reviews_pb2.REVIEW_ITEM_STATUS_OPEN, "done": reviews_pb2.REVIEW_ITEM_STATUS_DONE}
# A request's status filter; unspecified lists the open items.
ITEM_STATUS_NAME = {
    reviews_pb2.REVIEW_ITEM_STATUS_UNSPECIFIED: "open",
    reviews_pb2.REVIEW_ITEM_STATUS_OPEN: "open",
    reviews_pb2.REVIEW_ITEM_STATUS_DONE: "done",
}
# Highest priority first, then earliest due; creation time and id break ties.
ITEM_ORDER = (
    SortKey(ReviewItemRow.priority, descending=True),
    SortKey(ReviewItemRow.due_at),
    SortKey(ReviewItemRow.created_at),
    SortKey(ReviewItemRow.id),
)


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
        self._pages = PageLimits.from_settings(settings)
        self._taxonomy = taxonomy
        self._on_committed = on_committed or (lambda: None)
        self.clock = clock

    def _item_to_proto(
        self,
        session: Any,
        row: ReviewItemRow,
        feedback: dict[str, Feedback] | None = None,
        *,
        blind: bool = False,
    ) -> reviews_pb2.ReviewItem:
        """The wire item with its feedback; `feedback` is preloaded for a whole page, else read.
        `blind`: for the reviewer about to judge it, its evidence without reviewers' verdicts."""
        out = reviews_pb2.ReviewItem(
            id=row.id,
            queue=row.queue,
            policy=row.policy,
            feedback_id=row.feedback_id,
            group_key=row.group_key,
            issue_group_id=issue_group_of(row.dedup_key),
            evidence_feedback_ids=_without_verdicts(session, row) if blind else list(row.evidence or []),
            priority=row.priority,
            due_at=timestamp(row.due_at),
            status=ITEM_STATUS[row.status],
            reviews_required=row.reviews_required,
            reviews_done=row.reviews_done,
            created_at=timestamp(row.created_at),
        )
        if feedback is None:
            feedback = feedback_by_ids(session, row.project_id, [row.feedback_id])
        fb = feedback.get(row.feedback_id)
        if fb is not None:
            out.feedback.CopyFrom(feedback_to_proto(fb))
            if fb.interaction is not None:
                out.interaction.CopyFrom(interaction_to_proto(fb.interaction))
        return out

    def ListReviewItems(
        self, request: reviews_pb2.ListReviewItemsRequest, context: grpc.ServicerContext
    ) -> reviews_pb2.ListReviewItemsResponse:
        project = auth.current_principal().project_for(request.project)
        if request.status not in ITEM_STATUS_NAME:
            raise InvalidArgument.single(
                "status",
                f"must be REVIEW_ITEM_STATUS_OPEN or REVIEW_ITEM_STATUS_DONE (got {request.status})",
            )
        status = ITEM_STATUS_NAME[request.status]
        optional("queue", request.queue)
        stmt = select(ReviewItemRow).where(
            ReviewItemRow.project_id == project, ReviewItemRow.status == status
        )
        if request.queue:
            stmt = stmt.where(ReviewItemRow.queue == request.queue)
        with self._db.read() as session:
            rows, next_token = page(
                session,
                stmt,
                ITEM_ORDER,
                size=self._pages.size(request.page_size),
                token=request.page_token,
                digest=filter_digest(request),
            )
            # One query for the whole page's feedback, not one per item.
            feedback = feedback_by_ids(session, project, [r.feedback_id for r in rows])
            return reviews_pb2.ListReviewItemsResponse(
                items=[self._item_to_proto(session, r, feedback) for r in rows], next_page_token=next_token
            )

    def ClaimReviewItem(
        self, request: reviews_pb2.ClaimReviewItemRequest, context: grpc.ServicerContext
    ) -> reviews_pb2.ClaimReviewItemResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        queue = required("queue", request.queue)
        optional("reviewer", request.reviewer)
        skip = _skip_ids(request.skip_item_ids)
        reviewer = principal.reviewer_for(request.reviewer)
        now = self.clock()
        with self._db.write() as session:
            wanted = select(ReviewItemRow).where(
                ReviewItemRow.project_id == project,
                ReviewItemRow.queue == queue,
                ReviewItemRow.status == "open",
            )
            if skip:
                wanted = wanted.where(ReviewItemRow.id.not_in(skip))
            # Items this reviewer already resolved are left out here, not in the loop below: a
            # reviewer with hundreds of verdicts in a multi-review queue would otherwise find the
            # first 200 candidates all done and be told the queue is empty.
            wanted = wanted.where(
                ~exists().where(
                    ReviewClaim.item_id == ReviewItemRow.id,
                    ReviewClaim.reviewer == reviewer,
                    ReviewClaim.status == "resolved",
                )
            )
            candidates = session.scalars(
                wanted.order_by(
                    ReviewItemRow.priority.desc(),
                    ReviewItemRow.due_at,
                    ReviewItemRow.created_at,
                    ReviewItemRow.id,
                ).limit(200)
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
                elif mine.status == "released" or mine.lease_expires_at <= now:
                    # One row per reviewer and item: claiming again after a release or a lapse
                    # takes that row up again, so its id is the claim id handed out once more.
                    if item.reviews_done + active_others >= item.reviews_required:
                        continue
                    mine.status = "claimed"
                    mine.lease_expires_at = lease
                    mine.claimed_at = now
                return reviews_pb2.ClaimReviewItemResponse(
                    item=self._item_to_proto(session, item, blind=True),
                    claim_id=mine.id,
                    lease_expires_at=timestamp(mine.lease_expires_at),
                )
        require_known(
            self._db,
            project,
            "ReviewQueue",
            "queue",
            queue,
            select(ReviewItemRow.id).where(ReviewItemRow.project_id == project, ReviewItemRow.queue == queue),
        )
        return reviews_pb2.ClaimReviewItemResponse()

    def ResolveReviewItem(
        self, request: reviews_pb2.ResolveReviewItemRequest, context: grpc.ServicerContext
    ) -> reviews_pb2.ResolveReviewItemResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        claim_id = required("claim_id", request.claim_id)
        thumbs = {
            reviews_pb2.REVIEW_VERDICT_ACCEPT: common_pb2.THUMB_UP,
            reviews_pb2.REVIEW_VERDICT_REJECT: common_pb2.THUMB_DOWN,
        }
        if request.verdict not in thumbs:
            raise InvalidArgument.single("verdict", "must be REVIEW_VERDICT_ACCEPT or REVIEW_VERDICT_REJECT")
        now = self.clock()
        with self._db.read() as session:
            claim = self._own_claim(session, project, claim_id)
            item = session.get(ReviewItemRow, claim.item_id)
            assert item is not None
            if claim.status == "resolved":
                return reviews_pb2.ResolveReviewItemResponse(
                    feedback_id=claim.feedback_id,
                    reviews_done=item.reviews_done,
                    item_done=item.status == "done",
                )
            _refuse_released(claim, "resolve")
            if claim.lease_expires_at <= now:
                raise Conflict(
                    f"claim_id: the lease on item {item.id} expired at {claim.lease_expires_at.isoformat()}; "
                    "claim the item again"
                )
            source = feedback_by_ids(session, project, [item.feedback_id])[item.feedback_id]
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
            # A release that lands between the checks above and here loses: the verdict is
            # stored by now, and the claim it came from is resolved, not released.
            held = session.get(ReviewClaim, claim_id)
            assert held is not None
            claim = held
            item = session.get(ReviewItemRow, claim.item_id)
            assert item is not None
            if not self._db.is_sqlite:
                # Under the item's lock, as ClaimReviewItem and RenewReviewClaim take it: two
                # resolutions of the item at once would otherwise both count from the same
                # reviews_done and one review would be lost, and a claim being taken would judge
                # the item on a count about to change. The claim is read again under its own
                # lock, so a resolution of it committed meanwhile (a retry) counts once.
                session.refresh(item, with_for_update=True)
                session.refresh(claim, with_for_update=True)
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

    def _own_claim(self, session: Any, project: str, claim_id: str) -> ReviewClaim:
        """The caller's claim `claim_id`: NOT_FOUND in another project, PERMISSION_DENIED if not
        theirs (not even a resolved claim's outcome: another reviewer's verdict stays unseen)."""
        claim = session.scalar(
            select(ReviewClaim).where(ReviewClaim.project_id == project, ReviewClaim.id == claim_id)
        )
        if claim is None:
            raise NotFound("claim_id", f"no claim {claim_id}")
        if claim.reviewer != auth.current_principal().reviewer_identity:
            raise PermissionDenied("claim_id: this claim belongs to another reviewer")
        return claim

    def ReleaseReviewClaim(
        self, request: reviews_pb2.ReleaseReviewClaimRequest, context: grpc.ServicerContext
    ) -> reviews_pb2.ReleaseReviewClaimResponse:
        project = auth.current_principal().project_for(request.project)
        claim_id = required("claim_id", request.claim_id)
        now = self.clock()
        with self._db.write() as session:
            claim = self._own_claim(session, project, claim_id)
            if not self._db.is_sqlite:
                # Read again under the row's lock: a resolution committed meanwhile must not be
                # turned into a release.
                session.refresh(claim, with_for_update=True)
            if claim.status == "resolved":
                raise Conflict(f"claim_id: claim {claim_id} is resolved; there is nothing to release")
            # Ending the lease alone would not do: a renewal already on its way (the console's
            # page renews on a timer) would extend it again and lock the item to a reviewer who
            # left it. A released claim holds nothing and is never renewed or resolved; the row
            # stays, so this reviewer may claim the item again (which takes the row up anew).
            claim.status = "released"
            if claim.lease_expires_at > now:
                claim.lease_expires_at = now
        return reviews_pb2.ReleaseReviewClaimResponse()

    def RenewReviewClaim(
        self, request: reviews_pb2.RenewReviewClaimRequest, context: grpc.ServicerContext
    ) -> reviews_pb2.RenewReviewClaimResponse:
        project = auth.current_principal().project_for(request.project)
        claim_id = required("claim_id", request.claim_id)
        now = self.clock()
        with self._db.write() as session:
            claim = self._own_claim(session, project, claim_id)
            item = session.get(ReviewItemRow, claim.item_id)
            assert item is not None
            if not self._db.is_sqlite:
                # Claims of this item serialise on its row, as ClaimReviewItem does; the claim is
                # read again under its own lock so a release committed meanwhile is seen.
                session.refresh(item, with_for_update=True)
                session.refresh(claim, with_for_update=True)
            if claim.status == "resolved":
                raise Conflict(f"claim_id: claim {claim_id} is resolved; there is nothing to renew")
            _refuse_released(claim, "renew")
            if claim.lease_expires_at <= now:
                others = session.scalar(
                    select(func.count())
                    .select_from(ReviewClaim)
                    .where(
                        ReviewClaim.item_id == item.id,
                        ReviewClaim.reviewer != claim.reviewer,
                        ReviewClaim.status == "claimed",
                        ReviewClaim.lease_expires_at > now,
                    )
                )
                if item.status == "done" or item.reviews_done + (others or 0) >= item.reviews_required:
                    raise Conflict(
                        f"claim_id: the lease on item {item.id} expired at "
                        f"{claim.lease_expires_at.isoformat()} and another reviewer has claimed it"
                    )
            claim.lease_expires_at = now + timedelta(seconds=item.lease_seconds)
            return reviews_pb2.RenewReviewClaimResponse(lease_expires_at=timestamp(claim.lease_expires_at))

    def GetReviewQueueStats(
        self, request: reviews_pb2.GetReviewQueueStatsRequest, context: grpc.ServicerContext
    ) -> reviews_pb2.GetReviewQueueStatsResponse:
        project = auth.current_principal().project_for(request.project)
        queue = optional("queue", request.queue)
        now = self.clock()
        leased = exists().where(
            ReviewClaim.item_id == ReviewItemRow.id,
            ReviewClaim.status == "claimed",
            ReviewClaim.lease_expires_at > now,
        )
        is_open = ReviewItemRow.status == "open"
        stmt = (
            select(
                ReviewItemRow.queue,
                func.sum(case((and_(is_open, ~leased), 1), else_=0)),
                func.sum(case((and_(is_open, leased), 1), else_=0)),
                func.sum(case((ReviewItemRow.status == "done", 1), else_=0)),
                func.sum(case((and_(is_open, ReviewItemRow.due_at < now), 1), else_=0)),
            )
            .where(ReviewItemRow.project_id == project)
            .group_by(ReviewItemRow.queue)
        )
        if queue:
            stmt = stmt.where(ReviewItemRow.queue == queue)
        with self._db.read() as session:
            counts = {
                name: reviews_pb2.ReviewQueueStats(
                    queue=name, open=open_, claimed=claimed, done=done, past_sla=late
                )
                for name, open_, claimed, done, late in session.execute(stmt)
            }
            declared = live_names(session, project, "ReviewQueue")
        # A declared queue with no items yet is shown empty; a typo in a filter is NOT_FOUND.
        for name in declared:
            if (not queue or name == queue) and name not in counts:
                counts[name] = reviews_pb2.ReviewQueueStats(queue=name)
        if queue and queue not in counts:
            require_known(
                self._db,
                project,
                "ReviewQueue",
                "queue",
                queue,
                select(ReviewItemRow.id).where(
                    ReviewItemRow.project_id == project, ReviewItemRow.queue == queue
                ),
            )
        return reviews_pb2.GetReviewQueueStatsResponse(queues=[counts[name] for name in sorted(counts)])


def _refuse_released(claim: ReviewClaim, verb: str) -> None:
    """FAILED_PRECONDITION for a released claim: the reviewer gave the item back, and only a
    new claim (which may go to someone else) holds it again."""
    if claim.status == "released":
        raise Conflict(
            f"claim_id: claim {claim.id} was released; there is nothing to {verb} (claim the item again)"
        )


def _without_verdicts(session: Any, row: ReviewItemRow) -> list[str]:
    """`row`'s evidence less the feedback reviewers wrote, in order: blind review. A verdict is
    feedback like any other (indexed, routed), so an aggregate whose condition it meets counts it
    among the similar feedback that made it fire; a reviewer claiming the item is not handed
    another reviewer's verdict that way, whatever the client. The item's own feedback stays (the
    claim shows it in full). Listing items (`read`, which can list verdicts anyway) keeps them
    all: what the aggregate counted."""
    evidence = list(row.evidence or [])
    others = [fid for fid in evidence if fid != row.feedback_id]
    if not others:
        return evidence
    # By primary key alone, as store.lookups reads feedback: the ids are the item's project's.
    verdicts = set(
        session.scalars(select(Feedback.id).where(Feedback.id.in_(others), Feedback.source == REVIEWER))
    )
    return [fid for fid in evidence if fid not in verdicts]


def _skip_ids(values: Any) -> list[str]:
    """The claim's skip list, each an item id; INVALID_ARGUMENT naming the entry otherwise."""
    if len(values) > MAX_SKIP_ITEMS:
        raise InvalidArgument.single(
            "skip_item_ids", f"holds {len(values)} ids; the limit is {MAX_SKIP_ITEMS}"
        )
    return sorted({required(f"skip_item_ids[{i}]", value) for i, value in enumerate(values)})
