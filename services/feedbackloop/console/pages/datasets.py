"""Datasets: the items the dataset_add actions collected, each with the feedback it came from
(linked to its session), and the export as a JSONL download."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from feedbackloop.console.pages.catalog import live_catalog
from feedbackloop.console.pages.lookups import fetch_feedback
from feedbackloop.console.web import Page, error_page, page, redirect
from feedbackloop.v1 import datasets_pb2

PAGE_SIZE = 25
# Source feedback shown per item (an aggregate's item can name many).
SOURCES_SHOWN = 5
FORMATS = {"openai_chat": datasets_pb2.EXPORT_FORMAT_OPENAI_CHAT, "plain": datasets_pb2.EXPORT_FORMAT_PLAIN}
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


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
    # Read whole before answering, so a refusal is an error page and not a truncated download.
    lines = await page.stream(
        page.console.backend.datasets.ExportDataset,
        datasets_pb2.ExportDatasetRequest(dataset=name, format=FORMATS[format_name]),
    )
    body = "".join(line.line + "\n" for line in lines)
    filename = f"{_UNSAFE_FILENAME.sub('_', name) or 'dataset'}-{format_name}.jsonl"
    return Response(
        body,
        media_type="application/jsonl",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


routes = [
    Route("/datasets", datasets_screen, methods=["GET"]),
    Route("/datasets/{name}", dataset_screen, methods=["GET"]),
    Route("/datasets/{name}/export", export, methods=["GET"]),
]
