"""Policies: the live revision (its YAML), the history with rollback, and a plan of uploaded
files (the diff and the backtest, readable) that is applied only through ApplyPolicies with the
revision it was planned against, as `feedbackloop policy apply` does. Planning needs the
`policy` scope, changes `admin`; the server decides, the page only hides what it would refuse."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import grpc
from google.protobuf import duration_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from feedbackloop.console.backend import BackendError
from feedbackloop.console.pages.policy_upload import (
    MAX_FILES,
    PLANNED_FIELD_BYTES,
    UploadError,
    files_json,
    files_of_json,
    read_upload,
)
from feedbackloop.console.web import FormLimits, Page, action, error_page, page, redirect, text_field
from feedbackloop.v1 import routing_pb2

PAGE_SIZE = 20
BACKTEST_WINDOWS = {"1d": 1, "7d": 7, "14d": 14, "30d": 30, "none": 0}
MAX_MESSAGE_CHARS = 1000
KIND_NAMES = {
    routing_pb2.REVISION_KIND_UNSPECIFIED: "",
    routing_pb2.REVISION_KIND_APPLY: "apply",
    routing_pb2.REVISION_KIND_ROLLBACK: "rollback",
    routing_pb2.REVISION_KIND_BOOTSTRAP: "bootstrap",
}


# The plan form: the files, and a field or two. The apply form: the planned files in one field
# (any set the plan step accepts fits it), the revision, the note, the token.
PLAN_FORM = FormLimits(max_files=MAX_FILES, max_fields=10)
APPLY_FORM = FormLimits(max_fields=10, max_part_size=PLANNED_FIELD_BYTES)


def _revision_number(raw: str, field: str) -> int:
    if not raw.isdigit():
        raise UploadError(f"{field}: a revision number (got {raw!r})")
    return int(raw)


@page
async def policies_screen(request: Request, page: Page) -> Response:
    params = request.query_params
    show_raw = params.get("show") or "0"
    if not show_raw.isdigit():
        return error_page(request, 400, f"show: a revision number (got {show_raw!r})", session=page.session)
    history = await page.call(
        page.console.backend.routing.ListRevisions,
        routing_pb2.ListRevisionsRequest(page_size=PAGE_SIZE, page_token=params.get("page_token") or ""),
    )
    shown = None
    if history.live_revision or int(show_raw):
        shown = await page.call(
            page.console.backend.routing.GetRevision, routing_pb2.GetRevisionRequest(revision=int(show_raw))
        )
    return page.render(
        "policies/policies.html",
        history=history,
        shown=shown,
        kind_names=KIND_NAMES,
        can_change=page.can("admin"),
        next_page="/policies?" + urlencode({"page_token": history.next_page_token})
        if history.next_page_token
        else "",
        done=params.get("done", ""),
        done_revision=params.get("revision", ""),
    )


@action
async def rollback(request: Request, page: Page, form: FormData) -> Response:
    try:
        revision = _revision_number(text_field(form, "revision"), "revision")
        expected = _revision_number(text_field(form, "expected_revision"), "expected_revision")
    except UploadError as error:
        return error_page(request, 400, str(error), session=page.session)
    reply = await page.call(
        page.console.backend.routing.Rollback,
        routing_pb2.RollbackRequest(revision=revision, expected_revision=expected),
    )
    return redirect("/policies?" + urlencode({"done": "rolled_back", "revision": reply.revision.revision}))


@page
async def plan_form(request: Request, page: Page) -> Response:
    return page.render(
        "policies/plan_form.html",
        windows=list(BACKTEST_WINDOWS),
        can_plan=page.can("policy"),
        can_change=page.can("admin"),
    )


def changes_of(plan_json: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The resources a plan changes, each with its field changes as readable text."""
    try:
        data = json.loads(plan_json) if plan_json else {}
    except ValueError:
        return [], {}
    changed = []
    for resource in data.get("resource_changes", []):
        if resource.get("action") == "no-op":
            continue
        changed.append(
            {
                "address": resource.get("address", ""),
                "action": resource.get("action", ""),
                "changes": [
                    {
                        "path": change.get("path", ""),
                        "before": _show(change["before"]) if "before" in change else None,
                        "after": _show(change["after"]) if "after" in change else None,
                    }
                    for change in resource.get("changes", [])
                ],
            }
        )
    return changed, data.get("summary", {})


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


@action(limits=PLAN_FORM)
async def plan(request: Request, page: Page, form: FormData) -> Response:
    window = text_field(form, "backtest_window", "7d")
    if window not in BACKTEST_WINDOWS:
        return error_page(
            request,
            400,
            f"backtest_window: choose one of {', '.join(BACKTEST_WINDOWS)}",
            session=page.session,
        )
    try:
        upload = await read_upload(form)
    except UploadError as error:
        return error_page(request, 400, str(error), session=page.session)
    backend = page.console.backend.routing
    validation = await page.call(
        backend.ValidatePolicies, routing_pb2.ValidatePoliciesRequest(files=upload.files)
    )
    if not validation.valid:
        return page.render(
            "policies/plan.html",
            status_code=400,
            problems=list(validation.problems),
            files=upload.files,
            reply=None,
        )
    request_ = routing_pb2.PlanPoliciesRequest(
        files=upload.files, skip_backtest=BACKTEST_WINDOWS[window] == 0
    )
    if BACKTEST_WINDOWS[window]:
        request_.backtest_window.CopyFrom(duration_pb2.Duration(seconds=BACKTEST_WINDOWS[window] * 86400))
    reply = await page.call(backend.PlanPolicies, request_)
    changed, summary = changes_of(reply.plan_json)
    expected = reply.base_revision if upload.saved_base is None else upload.saved_base
    return page.render(
        "policies/plan.html",
        problems=[],
        files=upload.files,
        reply=reply,
        changed=changed,
        summary=summary,
        expected=expected,
        saved_base=upload.saved_base,
        files_json=files_json(upload.files),
        can_change=page.can("admin"),
        window=window,
    )


@action(limits=APPLY_FORM)
async def apply(request: Request, page: Page, form: FormData) -> Response:
    message = text_field(form, "message").strip()
    try:
        files = files_of_json(text_field(form, "files_json"))
        expected = _revision_number(text_field(form, "expected_revision"), "expected_revision")
    except UploadError as error:
        return error_page(request, 400, str(error), session=page.session)
    if len(message) > MAX_MESSAGE_CHARS:
        return error_page(
            request, 400, f"message: at most {MAX_MESSAGE_CHARS} characters", session=page.session
        )
    try:
        reply = await page.call(
            page.console.backend.routing.ApplyPolicies,
            routing_pb2.ApplyPoliciesRequest(files=files, expected_revision=expected, message=message),
        )
    except BackendError as error:
        if error.code == grpc.StatusCode.ABORTED:
            return error_page(
                request,
                409,
                f"The plan is stale: {error.message}. Make the plan again.",
                session=page.session,
            )
        raise
    done = "applied" if reply.changed else "unchanged"
    return redirect("/policies?" + urlencode({"done": done, "revision": reply.revision.revision}))


routes = [
    Route("/policies", policies_screen, methods=["GET"]),
    Route("/policies/rollback", rollback, methods=["POST"]),
    Route("/policies/plan", plan_form, methods=["GET"]),
    Route("/policies/plan", plan, methods=["POST"]),
    Route("/policies/apply", apply, methods=["POST"]),
]
