"""`feedbackloop trends`: GetTrends as a table, one row per group with a sparkline of its buckets."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import duration_pb2

from feedbackloop.client import add_connection_args, channel, rpc_error_exit
from feedbackloop.ingestion.convert import timestamp
from feedbackloop.policy.durations import DurationError, parse_positive_duration
from feedbackloop.v1 import common_pb2, recall_pb2, recall_pb2_grpc

DIMENSIONS = {
    "category": recall_pb2.TREND_DIMENSION_CATEGORY,
    "prompt-version": recall_pb2.TREND_DIMENSION_PROMPT_VERSION,
    "model-version": recall_pb2.TREND_DIMENSION_MODEL_VERSION,
    "signal": recall_pb2.TREND_DIMENSION_SIGNAL,
    "issue": recall_pb2.TREND_DIMENSION_ISSUE,
}
BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[int]) -> str:
    """One block per value, scaled to the row's largest; any non-zero value stands above an
    empty bucket, however small it is next to the peak."""
    peak = max(values, default=0)
    if peak <= 0:
        return BLOCKS[0] * len(values)
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[math.ceil(v / peak * top)] if v > 0 else BLOCKS[0] for v in values)


def _duration(text: str) -> duration_pb2.Duration:
    seconds = parse_positive_duration(text)
    if seconds != int(seconds):
        raise DurationError(f'duration must be whole seconds, got "{text}"')
    return duration_pb2.Duration(seconds=int(seconds))


def _end(text: str) -> datetime:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_trends(args: argparse.Namespace) -> int:
    try:
        request = recall_pb2.GetTrendsRequest(
            project=args.project,
            window=_duration(args.window),
            group_by=DIMENSIONS[args.by],
            top=args.top,
            filter=common_pb2.FeedbackFilter(
                categories=args.category, prompt_names=args.prompt, model_versions=args.model_version
            ),
        )
        if args.bucket:
            request.bucket.CopyFrom(_duration(args.bucket))
        if args.end:
            request.end.CopyFrom(timestamp(_end(args.end)))
    except ValueError as error:  # DurationError, or an --end that is not ISO 8601
        print(f"error: {error}", file=sys.stderr)
        return 2
    stub = recall_pb2_grpc.RecallServiceStub(channel(args))
    try:
        response = stub.GetTrends(request)
    except grpc.RpcError as error:
        return rpc_error_exit(error)
    print(render(response, args.window, args.by))
    return 0


def render(response: recall_pb2.GetTrendsResponse, window: str, by: str) -> str:
    if response.total == 0:
        lines = [f"no feedback in the window ({response.previous_total} in the {window} before)"]
    else:
        lines = [
            f"{response.total} feedback in the last {window}, {_share(response.negative, response.total)} negative; "
            f"{response.previous_total} in the {window} before, "
            f"{_share(response.previous_negative, response.previous_total)} negative"
        ]
    if not response.groups:
        return "\n".join(lines)
    keys = [_name(group, by) for group in response.groups]
    width = max(len(by), *(len(key) for key in keys))
    trend = max(len(response.groups[0].buckets), len("trend"))
    lines.append(
        f"{by:<{width}}  {'trend':<{trend}}  {'total':>6}  {'neg':>5}  {'before':>6}  {'neg':>5}  "
        f"{'change':>7}  {'neg pts':>7}"
    )
    for key, group in zip(keys, response.groups, strict=True):
        line = sparkline([bucket.total for bucket in group.buckets])
        lines.append(
            f"{key:<{width}}  {line:<{trend}}  {group.total:>6}  {group.negative_share:>5.0%}  {group.previous_total:>6}  "
            f"{group.previous_negative_share:>5.0%}  {group.total_change:>+7.0%}  "
            f"{group.negative_share_change * 100:>+7.1f}"
        )
    if response.groups_found > len(response.groups):
        lines.append(f"({response.groups_found - len(response.groups)} more groups; --top shows more)")
    return "\n".join(lines)


def _name(group: recall_pb2.TrendGroup, by: str) -> str:
    if by == "issue":  # a lasting group is known by its label; its id opens it elsewhere
        return f"{group.label or '(no words)'} [{group.key}]" if group.key else "(no group)"
    return group.key or "(none)"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def register(sub: Any) -> None:
    trends = sub.add_parser(
        "trends", help="feedback and complaint share per bucket, by one dimension, against the window before"
    )
    trends.add_argument("--by", choices=sorted(DIMENSIONS), required=True, help="what to group by")
    trends.add_argument("--window", default="7d", help="e.g. 24h, 14d (default 7d)")
    trends.add_argument("--bucket", default="", help="one bucket, e.g. 6h, 1d (default 1d, or the window)")
    trends.add_argument("--top", type=int, default=10, help="most groups shown (default 10, at most 100)")
    trends.add_argument("--end", default="", help="the window's end, ISO 8601 (default now)")
    trends.add_argument("--category", action="append", default=[], help="only feedback with this category")
    trends.add_argument("--prompt", action="append", default=[], help="only feedback on this prompt name")
    trends.add_argument(
        "--model-version", action="append", default=[], help="only feedback on this model version"
    )
    add_connection_args(trends)
    trends.set_defaults(handler=cmd_trends)
