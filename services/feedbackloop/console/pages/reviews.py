"""Review queues: progress per queue, and the screen where a reviewer works through one.

The reviewer holds one claim per queue at a time (the console remembers it in the session);
the page renews its lease while it is open. Resolving submits the verdict and claims the
next item in the same request, so "Enter" moves straight on. Blind review: the turns show the
end user's and evaluators' feedback, never another reviewer's (`shown_to_reviewer`); an
aggregate's similar feedback comes from ClaimReviewItem, which already leaves verdicts out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import grpc
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from feedbackloop.console.backend import BackendError
from feedbackloop.console.schema import Category, schema_categories
from feedbackloop.console.sessions import Claim, ConsoleSession
from feedbackloop.console.web import Page, action, error_page, page, redirect, text_field
from feedbackloop.v1 import common_pb2, ingestion_pb2, reviews_pb2, routing_pb2

# Turns of the conversation shown before the reviewed one (a long session stays readable).
CONTEXT_TURNS = 12
# How stale the categories offered may be after a new policy revision is applied.
SCHEMA_MAX_AGE_SECONDS = 30.0
# Similar feedback shown for an aggregate item.
EVIDENCE_SHOWN = 20

VERDICTS = (
    ("accept", reviews_pb2.REVIEW_VERDICT_ACCEPT, "Accept", "1"),
    ("reject", reviews_pb2.REVIEW_VERDICT_REJECT, "Reject", "2"),
)


@page
async def queues(request: Request, page: Page) -> Response:
    named = request.query_params.get("queue", "").strip()
    if named:
        return redirect(_screen(named))
    if not page.can("read"):
        # Listing queues needs `read`; a `review` key opens its queue by name instead.
        return page.render("reviews/queues.html", queues=None, can_review=page.can("review"))
    stats = await page.call(
        page.console.backend.reviews.GetReviewQueueStats, reviews_pb2.GetReviewQueueStatsRequest()
    )
    return page.render("reviews/queues.html", queues=list(stats.queues), can_review=page.can("review"))


@dataclass
class Context:
    """What a reviewer sees around an item, gathered in parallel."""

    turns: list[Any]
    later_turns: int
    earlier_turns: int
    decisions: list[Any]
    evidence: list[Any]
    categories: list[Category]
    notes: list[str]


async def _optional(page: Page, notes: list[str], what: str, method: Any, request: Any) -> Any | None:
    """A context call the key may lack the scope for: the page says so and goes on."""
    try:
        return await page.call(method, request)
    except BackendError as error:
        if error.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
            notes.append(f"{what}: {error.message}")
            return None
        raise


async def _schema_categories(page: Page, notes: list[str]) -> list[Category]:
    """The applied schema's categories, read again at most every SCHEMA_MAX_AGE_SECONDS: the
    live revision changes rarely, and the server builds its whole text on every GetRevision."""
    categories: list[Category] | None = page.session.recall("schema_categories", SCHEMA_MAX_AGE_SECONDS)
    if categories is None:
        revision = await _optional(
            page,
            notes,
            "feedback schema",
            page.console.backend.routing.GetRevision,
            routing_pb2.GetRevisionRequest(),
        )
        categories = schema_categories(revision.canonical_json) if revision is not None else []
        if revision is not None:
            page.session.remember("schema_categories", categories)
    return categories


async def gather_context(page: Page, item: reviews_pb2.ReviewItem) -> Context:
    backend = page.console.backend
    notes: list[str] = []
    session_id = item.interaction.session_id or item.feedback.session_id
    session_call = (
        _optional(
            page,
            notes,
            "conversation",
            backend.ingestion.GetSession,
            ingestion_pb2.GetSessionRequest(session_id=session_id),
        )
        if session_id
        else asyncio.sleep(0, None)
    )
    evidence_ids = [fid for fid in item.evidence_feedback_ids if fid != item.feedback_id][:EVIDENCE_SHOWN]
    session, explained, categories, *evidence = await asyncio.gather(
        session_call,
        _optional(
            page,
            notes,
            "policy decision",
            backend.routing.Explain,
            routing_pb2.ExplainRequest(feedback_id=item.feedback_id),
        ),
        _schema_categories(page, notes),
        *(
            _optional(
                page,
                notes,
                f"similar feedback {fid}",
                backend.ingestion.GetFeedback,
                ingestion_pb2.GetFeedbackRequest(feedback_id=fid),
            )
            for fid in evidence_ids
        ),
    )
    turns: list[Any] = []
    earlier = later = 0
    if session is not None:
        all_turns = list(session.turns)
        upto = next(
            (i for i, turn in enumerate(all_turns) if turn.interaction.id == item.interaction.id),
            len(all_turns) - 1,
        )
        start = max(0, upto - CONTEXT_TURNS)
        earlier, later = start, len(all_turns) - upto - 1
        turns = [_blind(turn) for turn in all_turns[start : upto + 1]]
    decisions = [record for record in (explained.records if explained else []) if record.decision]
    return Context(
        turns=turns,
        later_turns=later,
        earlier_turns=earlier,
        decisions=decisions,
        # ClaimReviewItem leaves reviewers' verdicts out of the item's evidence (blind review on
        # the server, for every client): what is left is shown as it is.
        evidence=[reply.feedback for reply in evidence if reply is not None],
        categories=categories,
        notes=notes,
    )


def shown_to_reviewer(feedback: common_pb2.Feedback) -> bool:
    """Blind review: whether a reviewer may see `feedback` on a turn of an item's context
    (GetSession returns every feedback). Another reviewer's verdict never is. An aggregate's
    similar feedback needs no such check: the server leaves verdicts out of it on claim."""
    return feedback.source != common_pb2.FEEDBACK_SOURCE_REVIEWER


def _blind(turn: ingestion_pb2.SessionTurn) -> dict[str, Any]:
    """A turn with other reviewers' verdicts left out (blind multi-review)."""
    return {
        "interaction": turn.interaction,
        "feedback": [fb for fb in turn.feedback if shown_to_reviewer(fb)],
    }


@page
async def review_screen(request: Request, page: Page) -> Response:
    queue = request.path_params["queue"]
    claim = page.session.claims.get(queue)
    if claim is not None and claim.lease_expires_at <= time.time():
        page.session.claims.pop(queue, None)
        claim = None
    item = reviews_pb2.ReviewItem.FromString(claim.item) if claim is not None else None
    # The progress and the item's context are asked for at once: the next item shows after one
    # round of calls, not two.
    stats_reply, context = await asyncio.gather(
        _queue_stats(page, queue), gather_context(page, item) if item is not None else asyncio.sleep(0, None)
    )
    stats = next((s for s in stats_reply.queues if s.queue == queue), None) if stats_reply else None
    return page.render(
        "reviews/review.html",
        queue=queue,
        stats=stats,
        item=item,
        claim=claim,
        context=context,
        verdicts=VERDICTS,
        resolved=request.query_params.get("resolved", ""),
        empty=item is None and request.query_params.get("empty") == "1",
    )


async def _queue_stats(page: Page, queue: str) -> reviews_pb2.GetReviewQueueStatsResponse | None:
    # Progress needs `read`; a key with `review` alone still works through the queue without it.
    if not page.can("read"):
        return None
    reply: reviews_pb2.GetReviewQueueStatsResponse = await page.call(
        page.console.backend.reviews.GetReviewQueueStats, reviews_pb2.GetReviewQueueStatsRequest(queue=queue)
    )
    return reply


async def _claim_next(page: Page, queue: str) -> bool:
    """Claim the next item for this reviewer into the session; False when none is waiting."""
    reply = await page.call(
        page.console.backend.reviews.ClaimReviewItem,
        reviews_pb2.ClaimReviewItemRequest(queue=queue, skip_item_ids=page.session.skipped.get(queue, [])),
    )
    if not reply.claim_id:
        page.session.claims.pop(queue, None)
        return False
    page.session.claims[queue] = Claim(
        claim_id=reply.claim_id,
        item_id=reply.item.id,
        item=reply.item.SerializeToString(),
        lease_expires_at=reply.lease_expires_at.seconds + reply.lease_expires_at.nanos / 1e9,
    )
    return True


def _screen(queue: str, **query: str) -> str:
    suffix = f"?{urlencode(query)}" if query else ""
    return f"/reviews/{quote(queue, safe='')}{suffix}"


@action
async def take_next(request: Request, page: Page, _form: FormData) -> Response:
    queue = request.path_params["queue"]
    if queue in page.session.claims:
        return redirect(_screen(queue))  # already holding one: show it
    found = await _claim_next(page, queue)
    return redirect(_screen(queue) if found else _screen(queue, empty="1"))


def _held(page: Page, queue: str, form: FormData) -> Claim | None:
    """The session's claim on `queue`, if the form is about it (a stale tab is not)."""
    claim = page.session.claims.get(queue)
    if claim is None or text_field(form, "claim_id") != claim.claim_id:
        return None
    return claim


@action
async def resolve(request: Request, page: Page, form: FormData) -> Response:
    queue = request.path_params["queue"]
    claim = _held(page, queue, form)
    if claim is None:
        return redirect(_screen(queue))
    verdict = {name: value for name, value, _, _ in VERDICTS}.get(text_field(form, "verdict"))
    if verdict is None:
        return error_page(request, 400, "verdict: choose Accept (1) or Reject (2)", session=page.session)
    reply = await page.call(
        page.console.backend.reviews.ResolveReviewItem,
        reviews_pb2.ResolveReviewItemRequest(
            claim_id=claim.claim_id,
            verdict=verdict,
            categories=[value for value in form.getlist("categories") if isinstance(value, str)],
            correction=text_field(form, "correction"),
            comment=text_field(form, "comment"),
        ),
    )
    page.session.claims.pop(queue, None)
    found = await _claim_next(page, queue)
    return redirect(_screen(queue, resolved=reply.feedback_id, **({} if found else {"empty": "1"})))


@action
async def skip(request: Request, page: Page, form: FormData) -> Response:
    queue = request.path_params["queue"]
    claim = _held(page, queue, form)
    if claim is None:
        return redirect(_screen(queue))
    await page.call(
        page.console.backend.reviews.ReleaseReviewClaim,
        reviews_pb2.ReleaseReviewClaimRequest(claim_id=claim.claim_id),
    )
    page.session.claims.pop(queue, None)
    page.session.skip(queue, claim.item_id)
    found = await _claim_next(page, queue)
    return redirect(_screen(queue) if found else _screen(queue, empty="1"))


@action
async def release(request: Request, page: Page, form: FormData) -> Response:
    queue = request.path_params["queue"]
    claim = _held(page, queue, form)
    if claim is not None:
        await page.call(
            page.console.backend.reviews.ReleaseReviewClaim,
            reviews_pb2.ReleaseReviewClaimRequest(claim_id=claim.claim_id),
        )
        page.session.claims.pop(queue, None)
    return redirect("/reviews")


# What the server says of a claim its reviewer no longer holds: resolved, released, or lapsed
# and taken by others (FAILED_PRECONDITION), or not there at all (NOT_FOUND). Whichever, this
# page's item is lost. PERMISSION_DENIED is not among them: the server says it of a key lacking
# the `review` scope or meant for another project as well as of another reviewer's claim, and a
# session only ever holds claims its own key took, so it is a refusal of the key (403).
_NOT_HELD = frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND})


def renew_refusal(
    request: Request, status: int, message: str, *, session: ConsoleSession | None = None
) -> JSONResponse:
    """A refusal of renew as the page's script reads it (JSON, the status kept), in place of the
    error page: not signed in or the key refused (401, 403: another origin, a bad CSRF token,
    the server's PERMISSION_DENIED), or the server not answering (503, 504). The claim may
    still be held; the page says so, and tries again on the next tick unless the status was
    401 or 403 (trying again cannot help: the reviewer must sign in again)."""
    return JSONResponse({"error": message}, status_code=status)


def _lost(message: str) -> JSONResponse:
    return JSONResponse({"held": False, "error": message}, status_code=409)


@action(errors=renew_refusal)
async def renew(request: Request, page: Page, form: FormData) -> Response:
    """Called by the page's script while it is open, so a reviewer reading a long conversation
    does not lose the item. Every answer is JSON: 200 `{"held": true, "lease_expires_at": ...}`;
    409 `{"held": false, "error": ...}` once the item is no longer this reviewer's (the page
    tells them it was lost, and this session forgets the claim); any other refusal is
    `{"error": ...}` with its status (`renew_refusal`)."""
    queue = request.path_params["queue"]
    claim = _held(page, queue, form)
    if claim is None:
        given = text_field(form, "claim_id") or "(none)"
        return _lost(f"claim_id: {given} is not the claim this session holds in queue {queue}")
    try:
        reply = await page.call(
            page.console.backend.reviews.RenewReviewClaim,
            reviews_pb2.RenewReviewClaimRequest(claim_id=claim.claim_id),
        )
    except BackendError as error:
        if error.code not in _NOT_HELD:
            raise  # the server did not answer or refused the key: renew_refusal, with its status
        if page.session.claims.get(queue) is claim:  # not a claim taken since in another tab
            page.session.claims.pop(queue)
        return _lost(error.message)
    claim.lease_expires_at = reply.lease_expires_at.seconds + reply.lease_expires_at.nanos / 1e9
    return JSONResponse({"held": True, "lease_expires_at": claim.lease_expires_at})


routes = [
    Route("/reviews", queues, methods=["GET"]),
    Route("/reviews/{queue}", review_screen, methods=["GET"]),
    Route("/reviews/{queue}/next", take_next, methods=["POST"]),
    Route("/reviews/{queue}/resolve", resolve, methods=["POST"]),
    Route("/reviews/{queue}/skip", skip, methods=["POST"]),
    Route("/reviews/{queue}/release", release, methods=["POST"]),
    Route("/reviews/{queue}/renew", renew, methods=["POST"]),
]
