"""Prompts: every version of a prompt with its labels and origin, the diff each version made,
and rollback of production to an earlier version (the admin scope)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from feedbackloop.console.pages.catalog import live_catalog
from feedbackloop.console.pages.diffs import line_diff
from feedbackloop.console.web import Page, action, error_page, page, redirect, text_field
from feedbackloop.v1 import prompts_pb2

# Versions shown, newest first (a prompt patched for years stays readable).
HISTORY_SHOWN = 50


@page
async def prompts_screen(request: Request, page: Page) -> Response:
    catalog = await live_catalog(page)
    name = (request.query_params.get("name") or "").strip()
    if name:
        return redirect(f"/prompts/{quote(name, safe='')}")
    return page.render("prompts/list.html", prompts=catalog.prompts)


async def _version(page: Page, name: str, label: str) -> Any:
    reply = await page.call(
        page.console.backend.prompts.GetPrompt, prompts_pb2.GetPromptRequest(name=name, label=label)
    )
    return reply.prompt


@page
async def prompt_screen(request: Request, page: Page) -> Response:
    name = request.path_params["name"]
    latest = await _version(page, name, "latest")
    numbers = list(range(latest.latest_version, max(0, latest.latest_version - HISTORY_SHOWN - 1), -1))
    versions = await asyncio.gather(*(_version(page, name, str(n)) for n in numbers if n != latest.version))
    by_number = {v.version: v for v in (latest, *versions)}
    history = []
    for n in numbers[:HISTORY_SHOWN]:
        version = by_number[n]
        before = by_number.get(n - 1)
        history.append(
            {
                "version": version,
                "diff": line_diff(before.template, version.template) if before is not None else [],
            }
        )
    params = request.query_params
    return page.render(
        "prompts/prompt.html",
        name=name,
        latest=latest,
        history=history,
        older=max(0, latest.latest_version - HISTORY_SHOWN),
        can_rollback=page.can("admin"),
        rolled_back=params.get("rolled_back", ""),
        patches=params.get("patches", ""),
    )


@action
async def rollback(request: Request, page: Page, form: FormData) -> Response:
    name = request.path_params["name"]
    raw = text_field(form, "version").strip()
    if not raw.isdigit() or int(raw) < 1:
        return error_page(
            request, 400, f"version: a version number from 1 (got {raw!r})", session=page.session
        )
    reply = await page.call(
        page.console.backend.prompts.RollbackPrompt,
        prompts_pb2.RollbackPromptRequest(name=name, version=int(raw)),
    )
    query = urlencode({"rolled_back": reply.prompt.version, "patches": ",".join(reply.rolled_back_patch_ids)})
    return redirect(f"/prompts/{quote(name, safe='')}?{query}")


routes = [
    Route("/prompts", prompts_screen, methods=["GET"]),
    Route("/prompts/{name}", prompt_screen, methods=["GET"]),
    Route("/prompts/{name}/rollback", rollback, methods=["POST"]),
]
