"""Datasets: the items the dataset_add actions collected, each with the feedback it came from
(linked to its session), and the export as a JSONL download, streamed as the server sends it."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from feedbackloop.console.backend import CALL_TIMEOUT_SECONDS, BackendError
from feedbackloop.console.pages.catalog import live_catalog
from feedbackloop.console.pages.lookups import fetch_feedback
from feedbackloop.console.web import Page, error_page, page, redirect
from feedbackloop.v1 import datasets_pb2

log = logging.getLogger(__name__)

PAGE_SIZE = 25
# Source feedback shown per item (an aggregate's item can name many).
SOURCES_SHOWN = 5
FORMATS = {"openai_chat": datasets_pb2.EXPORT_FORMAT_OPENAI_CHAT, "plain": datasets_pb2.EXPORT_FORMAT_PLAIN}
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
# The export is sent in pieces of about this size: few enough writes, little held at a time.
EXPORT_CHUNK_BYTES = 64 * 1024
# Longest wait for the export's next line (the server reads the dataset a page at a time).
EXPORT_IDLE_SECONDS = CALL_TIMEOUT_SECONDS


@page
async def datasets_screen(request: Request, page: Page) -> Response:
    name = (request.query_params.get("name") or "").strip()
    if name:
        return redirect(f"/datasets/{quote(name, safe='')}")
    catalog = await live_catalog(page)
    return page.render("datasets/list.html", datasets=catalog.datasets, formats=list(FORMATS))


@page
async def dataset_screen(request: Request, page: Page) -> Response:
    name = request.path_params["name"]
    token = request.query_params.get("page_token") or ""
    reply = await page.call(
        page.console.backend.datasets.ListItems,
        datasets_pb2.ListItemsRequest(dataset=name, page_size=PAGE_SIZE, page_token=token),
    )
    sources = await asyncio.gather(
        *(fetch_feedback(page, list(item.source_feedback_ids[:SOURCES_SHOWN])) for item in reply.items)
    )
    next_page = (
        f"/datasets/{quote(name, safe='')}?" + urlencode({"page_token": reply.next_page_token})
        if reply.next_page_token
        else ""
    )
    return page.render(
        "datasets/dataset.html",
        name=name,
        items=list(zip(reply.items, sources, strict=True)),
        next_page=next_page,
        first_page=not token,
        formats=list(FORMATS),
    )


@page
async def export(request: Request, page: Page) -> Response:
    name = request.path_params["name"]
    format_name = request.query_params.get("format") or "openai_chat"
    if format_name not in FORMATS:
        return error_page(
            request,
            400,
            f"format: choose one of {', '.join(FORMATS)} (got {format_name!r})",
            session=page.session,
        )
    lines = page.messages(
        page.console.backend.datasets.ExportDataset,
        datasets_pb2.ExportDatasetRequest(dataset=name, format=FORMATS[format_name]),
        idle_timeout=EXPORT_IDLE_SECONDS,
    )
    # The first line is awaited before answering, so a refusal (no such dataset, a key without
    # `read`) is still an error page; the rest goes out as it comes, a chunk at a time.
    first = await anext(lines, None)
    filename = f"{_UNSAFE_FILENAME.sub('_', name) or 'dataset'}-{format_name}.jsonl"
    return StreamingResponse(
        _chunks(first, lines, name),
        media_type="application/jsonl",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _chunks(
    first: datasets_pb2.ExportDatasetResponse | None,
    rest: AsyncGenerator[datasets_pb2.ExportDatasetResponse, None],
    name: str,
) -> AsyncIterator[bytes]:
    if first is None:
        await rest.aclose()
        return
    pending = [first.line.encode() + b"\n"]
    size = len(pending[0])
    try:
        async for message in rest:
            line = message.line.encode() + b"\n"
            pending.append(line)
            size += len(line)
            if size >= EXPORT_CHUNK_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
    except BackendError as error:
        # The download has begun: the only way left to say it failed is to break it off, so
        # the browser reports a failed download instead of keeping a file cut short.
        log.warning("console: the export of dataset %r broke off: %s", name, error)
        raise
    finally:
        await rest.aclose()
    if pending:
        yield b"".join(pending)


routes = [
    Route("/datasets", datasets_screen, methods=["GET"]),
    Route("/datasets/{name}", dataset_screen, methods=["GET"]),
    Route("/datasets/{name}/export", export, methods=["GET"]),
]
