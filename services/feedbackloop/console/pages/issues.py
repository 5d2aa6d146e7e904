"""Top issues: the complaint groups of a window, each with its daily count, and one group's members.

TopIssues names each group's members but not when they happened, so the plots come from one
paged ListFeedback over the same window and filter, read up to SCAN_LIMIT feedback (newest
first); a window with more says the plot covers only the newest ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from feedbackloop.console.pages.catalog import live_catalog
from feedbackloop.console.pages.filters import (
    SIGNALS,
    SOURCES,
    WINDOWS,
    Filter,
    FilterError,
    bucket_seconds,
    parse_filter,
)
from feedbackloop.console.pages.lookups import fetch_feedback
from feedbackloop.console.pages.search import MODES
from feedbackloop.console.web import Page, error_page, page
from feedbackloop.v1 import common_pb2, ingestion_pb2, recall_pb2

SCAN_LIMIT = 10_000
# Every complaint carries one of these (a thumb down, a rating, or, without either, a
# correction, a category or a negative action), so the scan can skip the rest: thumbs up,
# copies and bare comments, which are most feedback.
COMPLAINT_SIGNALS = (
    common_pb2.SIGNAL_THUMBS_DOWN,
    common_pb2.SIGNAL_RATING,
    common_pb2.SIGNAL_CORRECTION,
    common_pb2.SIGNAL_CATEGORY,
    common_pb2.SIGNAL_REGENERATE,
    common_pb2.SIGNAL_EDIT,
    common_pb2.SIGNAL_ABANDON,
    common_pb2.SIGNAL_REPHRASE,
)
SCAN_PAGE = 500
# Members of one group shown with their feedback and session links.
MEMBERS_SHOWN = 100


@dataclass
class Series:
    """Counts per bucket over a window: what a plot shows."""

    starts: list[int]  # bucket starts, epoch seconds
    counts: list[int]

    def plot(self, label: str) -> dict[str, Any]:
        return {"x": self.starts, "series": [{"label": label, "values": self.counts}]}

    def peak(self) -> int:
        return max(self.counts, default=0)


@dataclass
class Timeline:
    """When each feedback of a window happened, as far as the scan read."""

    start: int
    end: int
    bucket: int
    occurred: dict[str, int]
    complete: bool

    def series(self, ids: Iterable[str]) -> Series:
        buckets = max(1, -(-(self.end - self.start) // self.bucket))
        counts = [0] * buckets
        for fid in ids:
            when = self.occurred.get(fid)
            if when is not None and self.start <= when < self.end:
                counts[min(buckets - 1, (when - self.start) // self.bucket)] += 1
        return Series([self.start + i * self.bucket for i in range(buckets)], counts)


def _seconds(stamp: Any) -> int:
    return int(stamp.seconds)


async def read_timeline(page: Page, flt: Filter, end: dt.datetime) -> Timeline:
    window = flt.time_range(end)
    query = flt.proto()
    query.time_range.CopyFrom(window)
    if not query.signals:
        query.signals.extend(COMPLAINT_SIGNALS)
    occurred: dict[str, int] = {}
    token = ""
    while True:
        reply = await page.call(
            page.console.backend.ingestion.ListFeedback,
            ingestion_pb2.ListFeedbackRequest(filter=query, page_size=SCAN_PAGE, page_token=token),
        )
        for fb in reply.feedback:
            occurred[fb.id] = _seconds(fb.occurred_at)
        token = reply.next_page_token
        if not token or len(occurred) >= SCAN_LIMIT:
            break
    return Timeline(
        start=_seconds(window.start),
        end=_seconds(window.end),
        bucket=bucket_seconds(flt.days),
        occurred=occurred,
        complete=not token,
    )


async def top_issues(page: Page, flt: Filter, end: dt.datetime, max_issues: int = 0) -> Any:
    return await page.call(
        page.console.backend.recall.TopIssues,
        recall_pb2.TopIssuesRequest(
            time_range=flt.time_range(end), filter=flt.proto(), max_issues=max_issues
        ),
    )


def filter_form_context(flt: Filter, catalog: Any) -> dict[str, Any]:
    return {
        "flt": flt,
        "windows": list(WINDOWS),
        "signal_names": [name for name, _ in SIGNALS],
        "source_names_list": [name for name, _ in SOURCES],
        "catalog": catalog,
    }


def _now() -> dt.datetime:
    # Whole minutes: the group list and a group opened from it a moment later share a window.
    return dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


@page
async def issues_screen(request: Request, page: Page) -> Response:
    try:
        flt = parse_filter(request.query_params)
    except FilterError as error:
        return error_page(request, 400, str(error), session=page.session)
    end = _now()
    reply, timeline, catalog = await asyncio.gather(
        top_issues(page, flt, end), read_timeline(page, flt, end), live_catalog(page)
    )
    groups = [{"issue": issue, "series": timeline.series(issue.member_ids)} for issue in reply.issues]
    return page.render(
        "issues/list.html",
        reply=reply,
        groups=groups,
        timeline=timeline,
        modes=MODES,
        **filter_form_context(flt, catalog),
    )


@page
async def issue_screen(request: Request, page: Page) -> Response:
    group_id = request.path_params["group_id"]
    try:
        flt = parse_filter(request.query_params)
    except FilterError as error:
        return error_page(request, 400, str(error), session=page.session)
    end = _now()
    reply, timeline = await asyncio.gather(
        top_issues(page, flt, end, max_issues=100), read_timeline(page, flt, end)
    )
    issue = next((i for i in reply.issues if i.group_id == group_id), None)
    if issue is None:
        return error_page(
            request,
            404,
            f"No issue group {group_id} in the last {flt.window} with this filter "
            "(it may have no complaints in this window).",
            session=page.session,
        )
    members = await fetch_feedback(page, list(issue.member_ids[:MEMBERS_SHOWN]))
    return page.render(
        "issues/group.html",
        issue=issue,
        series=timeline.series(issue.member_ids),
        timeline=timeline,
        members=members,
        shown=len(members),
        flt=flt,
    )


routes = [
    Route("/issues", issues_screen, methods=["GET"]),
    Route("/issues/{group_id}", issue_screen, methods=["GET"]),
]
