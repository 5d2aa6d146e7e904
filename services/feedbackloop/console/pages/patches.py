"""Prompt patches: what the policies proposed, the feedback that made them, the template diff,
and approve or reject (the admin scope; others see the patch without the buttons, and the
server refuses them anyway)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import grpc
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from feedbackloop.console.backend import BackendError
from feedbackloop.console.pages.diffs import DiffLine, line_diff
from feedbackloop.console.pages.lookups import fetch_feedback
from feedbackloop.console.web import Page, action, error_page, page, redirect, text_field
from feedbackloop.routing.actions import patched_template
from feedbackloop.v1 import prompts_pb2

STATUSES = [
    ("proposed", prompts_pb2.PATCH_STATUS_PROPOSED),
    ("applied", prompts_pb2.PATCH_STATUS_APPLIED),
    ("rejected", prompts_pb2.PATCH_STATUS_REJECTED),
    ("rolled_back", prompts_pb2.PATCH_STATUS_ROLLED_BACK),
    ("all", prompts_pb2.PATCH_STATUS_UNSPECIFIED),
]
STATUS_NAMES = {value: name for name, value in STATUSES}
PAGE_SIZE = 20
# Evidence shown per patch (a patch from an aggregate can name many).
EVIDENCE_SHOWN = 10
MAX_REASON_CHARS = 2000


@dataclass
class PatchView:
    patch: Any
    diff: list[DiffLine]
    against: str  # what the diff compares with, in words
    evidence: list[Any]


class Templates:
    """Prompt versions read once per page (several patches share a prompt)."""

    def __init__(self, page: Page) -> None:
        self._page = page
        self._cache: dict[tuple[str, str], asyncio.Task[Any]] = {}

    async def get(self, name: str, label: str) -> Any | None:
        key = (name, label)
        if key not in self._cache:
            self._cache[key] = asyncio.ensure_future(self._read(name, label))
        return await self._cache[key]

    async def _read(self, name: str, label: str) -> Any | None:
        try:
            reply = await self._page.call(
                self._page.console.backend.prompts.GetPrompt,
                prompts_pb2.GetPromptRequest(name=name, label=label),
            )
        except BackendError as error:
            if error.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return reply.prompt


async def patch_diff(templates: Templates, patch: Any) -> tuple[list[DiffLine], str]:
    """The template change a patch makes: against production for one not applied, against the
    version before for one applied (or rolled back)."""
    if patch.result_version:
        before = await templates.get(patch.prompt, str(patch.result_version - 1))
        after = await templates.get(patch.prompt, str(patch.result_version))
        if after is not None:
            base = before.template if before is not None else ""
            return line_diff(
                base, after.template
            ), f"version {patch.result_version} against version {patch.result_version - 1}"
    production = await templates.get(patch.prompt, "production")
    base = production.template if production is not None else ""
    label = (
        f"against production (version {production.version})"
        if production is not None
        else "against an empty template"
    )
    return line_diff(base, patched_template(base, patch.strategy, patch.content)), label


async def view_of(page: Page, templates: Templates, patch: Any) -> PatchView:
    (diff, against), evidence = await asyncio.gather(
        patch_diff(templates, patch), fetch_feedback(page, list(patch.evidence_feedback_ids[:EVIDENCE_SHOWN]))
    )
    return PatchView(patch=patch, diff=diff, against=against, evidence=evidence)


@page
async def patches_screen(request: Request, page: Page) -> Response:
    params = request.query_params
    status = params.get("status") or "proposed"
    statuses = dict(STATUSES)
    if status not in statuses:
        return error_page(
            request,
            400,
            f"status: choose one of {', '.join(statuses)} (got {status!r})",
            session=page.session,
        )
    prompt = (params.get("prompt") or "").strip()
    reply = await page.call(
        page.console.backend.prompts.ListPatches,
        prompts_pb2.ListPatchesRequest(
            prompt=prompt,
            status=statuses[status],
            page_size=PAGE_SIZE,
            page_token=params.get("page_token") or "",
        ),
    )
    templates = Templates(page)
    views = await asyncio.gather(*(view_of(page, templates, patch) for patch in reply.patches))
    next_page = (
        "/patches?" + urlencode({"status": status, "prompt": prompt, "page_token": reply.next_page_token})
        if reply.next_page_token
        else ""
    )
    return page.render(
        "patches/list.html",
        views=views,
        status=status,
        statuses=[name for name, _ in STATUSES],
        status_names=STATUS_NAMES,
        prompt=prompt,
        next_page=next_page,
        can_decide=page.can("admin"),
        done=params.get("done", ""),
        done_patch=params.get("patch", ""),
        done_version=params.get("version", ""),
    )


def _after(done: str, patch: Any, **extra: str) -> str:
    return "/patches?" + urlencode(
        {"status": STATUS_NAMES[patch.status], "done": done, "patch": patch.id, **extra}
    )


@action
async def approve(request: Request, page: Page, _form: FormData) -> Response:
    reply = await page.call(
        page.console.backend.prompts.ApprovePatch,
        prompts_pb2.ApprovePatchRequest(patch_id=request.path_params["patch_id"]),
    )
    return redirect(_after("approved", reply.patch, version=str(reply.prompt.version)))


@action
async def reject(request: Request, page: Page, form: FormData) -> Response:
    reason = text_field(form, "reason").strip()
    if len(reason) > MAX_REASON_CHARS:
        return error_page(
            request, 400, f"reason: at most {MAX_REASON_CHARS} characters", session=page.session
        )
    reply = await page.call(
        page.console.backend.prompts.RejectPatch,
        prompts_pb2.RejectPatchRequest(patch_id=request.path_params["patch_id"], reason=reason),
    )
    return redirect(_after("rejected", reply.patch))


routes = [
    Route("/patches", patches_screen, methods=["GET"]),
    Route("/patches/{patch_id}/approve", approve, methods=["POST"]),
    Route("/patches/{patch_id}/reject", reject, methods=["POST"]),
]
