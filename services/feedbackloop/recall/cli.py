"""`feedbackloop recall ...` and `feedbackloop pipeline ...`: talk to a running server over gRPC."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from feedbackloop.client import add_connection_args, channel, rpc_error_exit
from feedbackloop.ingestion.convert import timestamp
from feedbackloop.policy.durations import parse_duration
from feedbackloop.recall import trends_cli
from feedbackloop.v1 import common_pb2, pipeline_pb2, pipeline_pb2_grpc, recall_pb2, recall_pb2_grpc

SEARCH_MODES = {
    "auto": recall_pb2.SEARCH_MODE_UNSPECIFIED,
    "feedback": recall_pb2.SEARCH_MODE_FEEDBACK,
    "question": recall_pb2.SEARCH_MODE_QUESTION,
    "both": recall_pb2.SEARCH_MODE_BOTH,
}


def cmd_reindex(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    stub = recall_pb2_grpc.RecallServiceStub(channel(args))
    request = recall_pb2.ReindexRequest(project=args.project, all_projects=args.all_projects)
    done, projects = 0, set()
    try:
        with tqdm(unit="feedback", desc="reindex", disable=args.quiet) as bar:
            for progress in stub.Reindex(request):
                bar.total = progress.total
                bar.n = done = progress.done
                if progress.project:
                    projects.add(progress.project)
                bar.refresh()
    except grpc.RpcError as error:
        return rpc_error_exit(error)
    where = f" in {len(projects)} project(s)" if args.all_projects else ""
    print(f"reindexed {done} feedback{where}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    stub = recall_pb2_grpc.RecallServiceStub(channel(args))
    request = recall_pb2.SearchSimilarRequest(
        project=args.project, top_k=args.top_k, min_score=args.min_score, mode=SEARCH_MODES[args.mode]
    )
    if args.feedback_id:
        request.feedback_id = args.text
    else:
        request.text = args.text
    try:
        response = stub.SearchSimilar(request)
    except grpc.RpcError as error:
        return rpc_error_exit(error)
    # The mode that ran, since an unspecified one is picked per query (a wordless feedback id
    # searches the question field).
    ran = recall_pb2.SearchMode.Name(response.mode).removeprefix("SEARCH_MODE_").lower()
    print(f"mode: {ran}")
    for hit in response.hits:
        f = hit.feedback
        words = f.comment or f.correction or ", ".join(f.categories)
        if not words and hit.interaction.input_messages:  # a wordless feedback: show its question
            words = "(asked) " + hit.interaction.input_messages[-1].content
        fields = ""
        if response.mode == recall_pb2.SEARCH_MODE_BOTH:  # `score` is the fused rank score there
            fields = f"  feedback {hit.feedback_score:.3f}  question {hit.question_score:.3f}"
        print(f"{hit.score:.3f}{fields}  {f.id}  {words[:100]}")
    if not response.hits:
        print("no similar feedback")
    return 0


def cmd_top_issues(args: argparse.Namespace) -> int:
    stub = recall_pb2_grpc.RecallServiceStub(channel(args))
    end = datetime.now(UTC)
    start = end - timedelta(seconds=parse_duration(args.window))
    try:
        response = stub.TopIssues(
            recall_pb2.TopIssuesRequest(
                project=args.project,
                time_range=common_pb2.TimeRange(start=timestamp(start), end=timestamp(end)),
                max_issues=args.limit,
            )
        )
    except grpc.RpcError as error:
        return rpc_error_exit(error)
    print(
        f"{response.total_negative} complaints in the last {args.window} ({response.previous_total_negative} before), "
        f"{response.groups_found} groups, {response.unclustered} in no group"
    )
    new = [issue for issue in response.issues if issue.new_in_window]
    for issue in response.issues:
        mark = "NEW " if issue.new_in_window else "    "
        print(
            f"{mark}{issue.size:5d}  {_change(issue):>16}  {issue.label or '(no words)'}  [{issue.group_id}]"
        )
        print(f"{'':27}e.g. {issue.representative_text[:100]}")
    if not response.issues:
        print("no issues (no group of similar complaints in the window)")
    elif new:
        print(f"new {_this(args.window)}: {', '.join(issue.label or issue.group_id for issue in new)}")
    return 0


def _change(issue: recall_pb2.Issue) -> str:
    """A group's size against the window before: the same lasting group in both."""
    if issue.new_in_window:
        return "new"
    if issue.previous_size == 0:
        return "none before"  # seen in an earlier window, not in the one just before
    return f"{issue.growth:+.0%} from {issue.previous_size}"


def _this(window: str) -> str:
    seconds = parse_duration(window)
    if seconds == 7 * 86400:
        return "this week"
    if seconds == 86400:
        return "in the last day"
    return f"in the last {window}"


def cmd_pipeline_status(args: argparse.Namespace) -> int:
    stub = pipeline_pb2_grpc.PipelineServiceStub(channel(args))
    try:
        status = stub.GetPipelineStatus(pipeline_pb2.GetPipelineStatusRequest(project=args.project))
    except grpc.RpcError as error:
        return rpc_error_exit(error)
    print(
        f"pending index: {status.pending_index}  pending route: {status.pending_route}  "
        f"waiting for span: {status.waiting_for_span}  done: {status.done}  dead: {status.dead}"
    )
    if status.HasField("index"):
        print(_index_line(status.index))
    return 0


def _index_line(index: pipeline_pb2.IndexStatus) -> str:
    if index.error:
        return f"index: could not be counted: {index.error}"
    line = f"index: {index.indexed} of {index.expected} expected vectors"
    if index.missing:
        line += f", {index.missing} MISSING: run `feedbackloop recall reindex` to rebuild them from the store"
    return line


def cmd_dead_letters(args: argparse.Namespace) -> int:
    stub = pipeline_pb2_grpc.PipelineServiceStub(channel(args))
    try:
        response = stub.ListDeadLetters(
            pipeline_pb2.ListDeadLettersRequest(project=args.project, limit=args.limit)
        )
    except grpc.RpcError as error:
        return rpc_error_exit(error)
    for dead in response.dead_letters:
        print(f"{dead.job_id}\t{dead.feedback_id}\t{dead.stage}\tattempts={dead.attempts}\t{dead.last_error}")
    if not response.dead_letters:
        print("the dead letter is empty")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    stub = pipeline_pb2_grpc.PipelineServiceStub(channel(args))
    try:
        response = stub.RetryDeadLetters(
            pipeline_pb2.RetryDeadLettersRequest(project=args.project, job_ids=args.job_ids)
        )
    except grpc.RpcError as error:
        return rpc_error_exit(error)
    print(f"re-queued {response.retried} job(s)")
    return 0


def register(sub: Any) -> None:
    recall = sub.add_parser("recall", help="semantic recall").add_subparsers(
        dest="recall_command", required=True
    )
    reindex = recall.add_parser("reindex", help="rebuild the Milvus vectors from the store")
    reindex.add_argument("--quiet", action="store_true", help="no progress bar")
    reindex.add_argument(
        "--all-projects",
        action="store_true",
        help="rebuild every project's vectors (a deployment admin: an admin key of the default project)",
    )
    add_connection_args(reindex)
    reindex.set_defaults(handler=cmd_reindex)
    search = recall.add_parser("search", help="feedback similar to a text (or to a feedback id)")
    search.add_argument("text")
    search.add_argument("--feedback-id", action="store_true", help="TEXT is a feedback id")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--min-score", type=float, default=0.0)
    search.add_argument(
        "--mode",
        choices=sorted(SEARCH_MODES),
        default="auto",
        help="the field searched: what users wrote (feedback), what they asked (question), or both "
        "fused by rank; auto (default) is feedback, or question for a feedback id without words",
    )
    add_connection_args(search)
    search.set_defaults(handler=cmd_search)
    top = recall.add_parser("top-issues", help="what users complain about")
    top.add_argument("--window", default="7d", help="e.g. 24h, 7d")
    top.add_argument("--limit", type=int, default=10)
    add_connection_args(top)
    top.set_defaults(handler=cmd_top_issues)
    trends_cli.register(sub)

    pipeline = sub.add_parser("pipeline", help="the processing queue").add_subparsers(
        dest="pipeline_command", required=True
    )
    status = pipeline.add_parser("status", help="jobs by state")
    add_connection_args(status)
    status.set_defaults(handler=cmd_pipeline_status)
    dead = pipeline.add_parser("dead-letters", help="jobs that exhausted their attempts")
    dead.add_argument("--limit", type=int, default=100)
    add_connection_args(dead)
    dead.set_defaults(handler=cmd_dead_letters)
    retry = pipeline.add_parser("retry", help="re-queue dead-lettered jobs (all, or the given ids)")
    retry.add_argument("job_ids", nargs="*", type=int)
    add_connection_args(retry)
    retry.set_defaults(handler=cmd_retry)
