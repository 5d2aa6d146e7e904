"""Feedback read by id for the screens that name it (issue members, patch evidence, dataset
sources), with its interaction, so each can link to its session."""

from __future__ import annotations

import asyncio
from typing import Any

from feedbackloop.console.web import Page
from feedbackloop.v1 import ingestion_pb2

# Parallel GetFeedback calls of one page: enough to hide the round trips, few enough that one
# page does not crowd the server.
FETCH_CONCURRENCY = 16


async def fetch_feedback(page: Page, ids: list[str]) -> list[Any]:
    """GetFeedback for each id, in order; ids the server does not find (or refuses) are left
    out, unless all are, when the first refusal is the page's answer."""
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(fid: str) -> Any:
        async with limit:
            return await page.call(
                page.console.backend.ingestion.GetFeedback, ingestion_pb2.GetFeedbackRequest(feedback_id=fid)
            )

    replies = await asyncio.gather(*(one(fid) for fid in ids), return_exceptions=True)
    found = [reply for reply in replies if not isinstance(reply, BaseException)]
    errors = [reply for reply in replies if isinstance(reply, BaseException)]
    if errors and not found:
        raise errors[0]
    return found
