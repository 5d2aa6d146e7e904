"""Trends: feedback volume and complaint share over time, grouped by category, prompt version,
model version, signal or issue group (GetTrends), for a window and the shared filter."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import duration_pb2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from feedbackloop.console.pages.catalog import live_catalog
from feedbackloop.console.pages.filters import (
    SIGNALS,
    SOURCES,
    WINDOWS,
    FilterError,
    bucket_seconds,
    parse_filter,
)
from feedbackloop.console.web import Page, error_page, page
from feedbackloop.v1 import recall_pb2

DIMENSIONS = [
    ("category", recall_pb2.TREND_DIMENSION_CATEGORY, "category"),
    ("prompt_version", recall_pb2.TREND_DIMENSION_PROMPT_VERSION, "prompt version"),
    ("model_version", recall_pb2.TREND_DIMENSION_MODEL_VERSION, "model version"),
    ("signal", recall_pb2.TREND_DIMENSION_SIGNAL, "signal"),
    ("issue", recall_pb2.TREND_DIMENSION_ISSUE, "issue group"),
]
# Groups plotted (the table lists every group the server returns).
TOP = 8


def _name(group: Any, dimension: str) -> str:
    if group.key == "":
        return "(no issue group)" if dimension == "issue" else "(none)"
    return str(group.label or group.key) if dimension == "issue" else str(group.key)


def plots_of(reply: Any, dimension: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volume and the complaint-share plot data, one series per group."""
    groups = list(reply.groups)
    starts = [int(b.start.seconds) for b in groups[0].buckets] if groups else []
    volume = {
        "x": starts,
        "series": [{"label": _name(g, dimension), "values": [b.total for b in g.buckets]} for g in groups],
    }
    share = {
        "x": starts,
        "percent": True,
        "series": [
            {
                "label": _name(g, dimension),
                # An empty bucket has no share: a gap, not a drop to zero.
                "values": [round(b.negative_share, 4) if b.total else None for b in g.buckets],
            }
            for g in groups
        ],
    }
    return volume, share


@page
async def trends_screen(request: Request, page: Page) -> Response:
    params = request.query_params
    try:
        flt = parse_filter(params)
    except FilterError as error:
        return error_page(request, 400, str(error), session=page.session)
    dimension = params.get("group_by") or "category"
    dimensions = {name: value for name, value, _ in DIMENSIONS}
    if dimension not in dimensions:
        return error_page(
            request,
            400,
            f"group_by: choose one of {', '.join(dimensions)} (got {dimension!r})",
            session=page.session,
        )
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    trends_request = recall_pb2.GetTrendsRequest(
        window=duration_pb2.Duration(seconds=flt.days * 86400),
        bucket=duration_pb2.Duration(seconds=bucket_seconds(flt.days)),
        group_by=dimensions[dimension],
        filter=flt.proto(),
        top=TOP,
    )
    trends_request.end.FromDatetime(end)
    reply = await page.call(page.console.backend.recall.GetTrends, trends_request)
    volume, share = plots_of(reply, dimension)
    return page.render(
        "trends/trends.html",
        reply=reply,
        dimension=dimension,
        dimensions=DIMENSIONS,
        volume=volume,
        share=share,
        group_name=lambda g: _name(g, dimension),
        flt=flt,
        windows=list(WINDOWS),
        signal_names=[name for name, _ in SIGNALS],
        source_names_list=[name for name, _ in SOURCES],
        catalog=await live_catalog(page),
    )


routes = [Route("/trends", trends_screen, methods=["GET"])]
