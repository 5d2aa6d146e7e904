"""Find similar feedback: a free-text SearchSimilar with the metadata filters and the mode."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from feedbackloop.console.pages.catalog import live_catalog
from feedbackloop.console.pages.filters import ANY_TIME, SIGNALS, SOURCES, WINDOWS, FilterError, parse_filter
from feedbackloop.console.web import Page, error_page, page
from feedbackloop.v1 import recall_pb2

MODES = [
    ("auto", recall_pb2.SEARCH_MODE_UNSPECIFIED, "what users wrote (default)"),
    ("feedback", recall_pb2.SEARCH_MODE_FEEDBACK, "what users wrote"),
    ("question", recall_pb2.SEARCH_MODE_QUESTION, "what users asked"),
    ("both", recall_pb2.SEARCH_MODE_BOTH, "both, fused"),
]
MODE_NAMES = {value: label for name, value, label in MODES if name != "auto"}
MAX_QUERY_CHARS = 2000
TOP_K = 25


@page
async def search_screen(request: Request, page: Page) -> Response:
    params = request.query_params
    try:
        flt = parse_filter(params, default_window="")
    except FilterError as error:
        return error_page(request, 400, str(error), session=page.session)
    text = (params.get("q") or "").strip()
    mode = params.get("mode") or "auto"
    modes = {name: value for name, value, _ in MODES}
    if mode not in modes:
        return error_page(
            request, 400, f"mode: choose one of {', '.join(modes)} (got {mode!r})", session=page.session
        )
    if len(text) > MAX_QUERY_CHARS:
        return error_page(request, 400, f"q: at most {MAX_QUERY_CHARS} characters", session=page.session)
    catalog = await live_catalog(page)
    reply = None
    if text:
        query_filter = flt.proto()
        if flt.has_window:
            query_filter.time_range.CopyFrom(flt.time_range(dt.datetime.now(dt.UTC)))
        reply = await page.call(
            page.console.backend.recall.SearchSimilar,
            recall_pb2.SearchSimilarRequest(text=text, top_k=TOP_K, filter=query_filter, mode=modes[mode]),
        )
    return page.render(
        "issues/search.html",
        q=text,
        mode=mode,
        modes=MODES,
        mode_names=MODE_NAMES,
        reply=reply,
        flt=flt,
        signal_names=[name for name, _ in SIGNALS],
        source_names_list=[name for name, _ in SOURCES],
        catalog=catalog,
        windows=[ANY_TIME, *WINDOWS],
    )


routes = [Route("/search", search_screen, methods=["GET"])]
