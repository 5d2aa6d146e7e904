"""`feedbackloop policy|explain|prompt|dataset|review ...`: talk to a running server over gRPC.

`policy validate` and `policy test` work offline on the files; everything else needs a server
(--server, default 127.0.0.1:50051) and a key (--key or FEEDBACKLOOP_API_KEY; a loopback
development server accepts none).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2

from feedbackloop.client import add_connection_args, channel, rpc_error_exit
from feedbackloop.export_target import ExportTarget, TargetError
from feedbackloop.policy.durations import DurationError, parse_positive_duration
from feedbackloop.routing.saved_plan import PLAN_FORMAT, SavedPlanError, parse_saved_plan
from feedbackloop.v1 import (
    datasets_pb2,
    datasets_pb2_grpc,
    prompts_pb2,
    prompts_pb2_grpc,
    reviews_pb2,
    reviews_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)


def _duration(text: str) -> duration_pb2.Duration:
    try:
        return duration_pb2.Duration(seconds=int(parse_positive_duration(text)))
    except DurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _files(path: str) -> list[routing_pb2.PolicyFile]:
    from feedbackloop.policy.loader import iter_policy_files

    root = Path(path)
    if not root.exists():
        raise SystemExit(f"error: {path}: no such file or directory")
    files = []
    for p in iter_policy_files(root):
        try:
            files.append(routing_pb2.PolicyFile(path=str(p), content=p.read_text(encoding="utf-8")))
        except UnicodeDecodeError as error:
            raise SystemExit(f"error: {p}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return files


class PlanFileError(ValueError):
    """A saved plan that cannot be applied; the message names the file and what is wrong."""


def _load_plan(path: Path) -> tuple[list[routing_pb2.PolicyFile], int]:
    """The files and base revision of a plan saved by `policy plan -out`, checked whole."""
    retry = "; make it again with `feedbackloop policy plan DIR -out FILE`"
    try:
        return parse_saved_plan(str(path), path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PlanFileError(f"{path}: not a saved plan: not UTF-8 text{retry}") from None
    except SavedPlanError as error:
        raise PlanFileError(f"{error}{retry if error.damaged else ''}") from None


def _call(args: argparse.Namespace, stub_class: Any, method: str, request: Any) -> Any:
    with channel(args) as open_channel:
        return getattr(stub_class(open_channel), method)(request, timeout=args.timeout)


def _pages(args: argparse.Namespace, stub_class: Any, method: str, request: Any) -> Iterator[Any]:
    """Every page of a list call, following next_page_token to the end."""
    while True:
        response = _call(args, stub_class, method, request)
        yield response
        if not response.next_page_token:
            return
        request.page_token = response.next_page_token


def _run(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except grpc.RpcError as error:
            return rpc_error_exit(error)

    return wrapped


# --- policy ---


def cmd_validate(args: argparse.Namespace) -> int:
    from feedbackloop.policy import validate_dir

    policy_set, errors = validate_dir(args.dir)
    for error in errors:
        print(error, file=sys.stderr)
    if policy_set is None:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"valid: {len(policy_set.resources)} resource(s), content hash {policy_set.content_hash()}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from feedbackloop.policy import run_tests

    report = run_tests(args.dir)
    print(report.render(), end="")
    return 0 if report.passed else 1


def cmd_plan(args: argparse.Namespace) -> int:
    out: ExportTarget | None = None
    if args.out:  # before asking the server, so a typo costs no backtest
        try:
            out = ExportTarget.of(args.out)
        except TargetError as error:
            print(f"error: -out {error}", file=sys.stderr)
            return 1
    files = _files(args.dir)
    request = routing_pb2.PlanPoliciesRequest(files=files, project=args.project)
    request.backtest_window.CopyFrom(args.window)
    plan = _call(args, routing_pb2_grpc.RoutingServiceStub, "PlanPolicies", request)
    print(plan.plan_json if args.json else plan.plan_text, end="")
    if out is not None:
        saved = {
            "format": PLAN_FORMAT,
            "base_revision": plan.base_revision,
            "content_hash": plan.content_hash,
            "files": [{"path": f.path, "content": f.content} for f in files],
        }
        with out.writer() as write:
            write(json.dumps(saved, indent=2) + "\n")
        print(f"\nSaved the plan to {args.out}; apply it with `feedbackloop policy apply {args.out}`.")
    if args.detailed_exitcode:
        return 2 if plan.has_changes else 0
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    path = Path(args.target)
    stub = routing_pb2_grpc.RoutingServiceStub
    if path.is_file() and path.suffix == ".json":
        try:
            files, base = _load_plan(path)
        except PlanFileError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    else:
        files = _files(args.target)
        plan = _call(
            args,
            stub,
            "PlanPolicies",
            routing_pb2.PlanPoliciesRequest(files=files, project=args.project, skip_backtest=True),
        )
        base = plan.base_revision
    request = routing_pb2.ApplyPoliciesRequest(project=args.project, files=files, expected_revision=base)
    if args.backfill:
        request.backfill_window.CopyFrom(args.backfill)
    try:
        result = _call(args, stub, "ApplyPolicies", request)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.ABORTED:
            print(f"error: saved plan is stale: {error.details()}", file=sys.stderr)
            return 1
        raise
    print(result.plan_text, end="")
    if result.changed:
        print(f"Apply complete: revision {result.revision.revision} ({result.revision.content_hash[:12]}).")
    else:
        print(f"No changes; revision {result.revision.revision} stays live.")
    if args.backfill:
        b = result.backfill
        print(
            f"Backfill: {b.feedback_count} feedback, {b.matched} matched, {b.actions_created} created, {b.failed} failed."
        )
    return 0


def _revision_line(r: routing_pb2.PolicyRevision) -> str:
    kind = routing_pb2.RevisionKind.Name(r.kind).removeprefix("REVISION_KIND_").lower()
    extra = f" (from revision {r.source_revision})" if r.source_revision else ""
    when = r.applied_at.ToDatetime().isoformat(timespec="seconds")
    return f"{r.revision:>5}  {when}Z  {kind}{extra}  by {r.applied_by}  {r.content_hash[:12]}  {r.message}".rstrip()


def cmd_history(args: argparse.Namespace) -> int:
    shown = 0
    for response in _pages(
        args,
        routing_pb2_grpc.RoutingServiceStub,
        "ListRevisions",
        routing_pb2.ListRevisionsRequest(project=args.project),
    ):
        for r in response.revisions:
            print(_revision_line(r) + ("  (live)" if r.revision == response.live_revision else ""))
            shown += 1
    if not shown:
        print("no policy revisions (nothing applied yet)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    response = _call(
        args,
        routing_pb2_grpc.RoutingServiceStub,
        "GetRevision",
        routing_pb2.GetRevisionRequest(project=args.project, revision=args.revision),
    )
    print("# " + _revision_line(response.revision))
    print(response.yaml, end="")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    response = _call(
        args,
        routing_pb2_grpc.RoutingServiceStub,
        "Rollback",
        routing_pb2.RollbackRequest(project=args.project, revision=args.revision),
    )
    print(f"revision {response.revision.revision} is live (content of revision {args.revision})")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    response = _call(
        args,
        routing_pb2_grpc.RoutingServiceStub,
        "Explain",
        routing_pb2.ExplainRequest(project=args.project, feedback_id=args.feedback_id),
    )
    if not response.records:
        print("no decisions recorded (not routed yet, or no policy revision was live)")
    for record in response.records:
        d = record.decision
        outcome = routing_pb2.DecisionOutcome.Name(d.outcome).removeprefix("DECISION_OUTCOME_").lower()
        group = f" [{d.group_key}]" if d.group_key else ""
        print(f"rev {record.revision}  {d.policy}: {outcome}{group} - {d.reason}")
        for a in d.actions:
            status = routing_pb2.ActionStatus.Name(a.status).removeprefix("ACTION_STATUS_").lower()
            print(f"    actions[{a.index}] {a.type} {a.target}: {status} {a.resource_id} {a.detail}".rstrip())
    return 0


# --- prompts, datasets, reviews ---


def cmd_prompt_get(args: argparse.Namespace) -> int:
    p = _call(
        args,
        prompts_pb2_grpc.PromptServiceStub,
        "GetPrompt",
        prompts_pb2.GetPromptRequest(project=args.project, name=args.name, label=args.label),
    ).prompt
    print(
        f"# {p.name} version {p.version} ({p.origin}; production is {p.production_version}, latest {p.latest_version})"
    )
    print(p.template)
    return 0


def cmd_prompt_patches(args: argparse.Namespace) -> int:
    pages = _pages(
        args,
        prompts_pb2_grpc.PromptServiceStub,
        "ListPatches",
        prompts_pb2.ListPatchesRequest(project=args.project, prompt=args.prompt or ""),
    )
    shown = 0
    for p in (patch for response in pages for patch in response.patches):
        status = prompts_pb2.PatchStatus.Name(p.status).removeprefix("PATCH_STATUS_").lower()
        print(
            f"{p.id}  {p.prompt}  {status}  {p.strategy}  by {p.policy}  evidence {','.join(p.evidence_feedback_ids)}"
        )
        print("    " + p.content.replace("\n", "\n    "))
        shown += 1
    if not shown:
        print(f"no patches{f' for prompt {args.prompt}' if args.prompt else ''}")
    return 0


def cmd_prompt_approve(args: argparse.Namespace) -> int:
    r = _call(
        args,
        prompts_pb2_grpc.PromptServiceStub,
        "ApprovePatch",
        prompts_pb2.ApprovePatchRequest(project=args.project, patch_id=args.patch_id),
    )
    print(f"approved {args.patch_id}: {r.prompt.name} version {r.prompt.version} is production")
    return 0


def cmd_prompt_reject(args: argparse.Namespace) -> int:
    _call(
        args,
        prompts_pb2_grpc.PromptServiceStub,
        "RejectPatch",
        prompts_pb2.RejectPatchRequest(project=args.project, patch_id=args.patch_id, reason=args.reason),
    )
    print(f"rejected {args.patch_id}")
    return 0


def cmd_prompt_rollback(args: argparse.Namespace) -> int:
    r = _call(
        args,
        prompts_pb2_grpc.PromptServiceStub,
        "RollbackPrompt",
        prompts_pb2.RollbackPromptRequest(project=args.project, name=args.name, version=args.version),
    )
    print(
        f"{r.prompt.name}: version {r.prompt.version} is production; rolled back {', '.join(r.rolled_back_patch_ids) or 'no patches'}"
    )
    return 0


def cmd_dataset_export(args: argparse.Namespace) -> int:
    fmt = {"openai_chat": datasets_pb2.EXPORT_FORMAT_OPENAI_CHAT, "plain": datasets_pb2.EXPORT_FORMAT_PLAIN}[
        args.format
    ]
    request = datasets_pb2.ExportDatasetRequest(project=args.project, dataset=args.name, format=fmt)
    try:
        target = ExportTarget.of(args.output)
    except TargetError as error:
        print(f"error: -o {error}", file=sys.stderr)
        return 1
    # Written as the stream arrives (see export_target: a regular file through a side file
    # renamed at the end, so a failed export leaves the previous OUTPUT as it was).
    written = 0
    with channel(args) as open_channel, target.writer() as write:
        stub = datasets_pb2_grpc.DatasetServiceStub(open_channel)
        for line in stub.ExportDataset(request, timeout=args.timeout):
            write(line.line + "\n")
            written += 1
    empty = " (the dataset has no items)" if not written else ""
    print(f"wrote {written} item(s) to {target.name}{empty}", file=sys.stderr)
    return 0


def cmd_review_list(args: argparse.Namespace) -> int:
    pages = _pages(
        args,
        reviews_pb2_grpc.ReviewServiceStub,
        "ListReviewItems",
        reviews_pb2.ListReviewItemsRequest(project=args.project, queue=args.queue or ""),
    )
    shown = 0
    for i in (item for response in pages for item in response.items):
        due = i.due_at.ToDatetime().isoformat(timespec="minutes")
        print(
            f"{i.id}  {i.queue}  p{i.priority}  due {due}Z  {i.reviews_done}/{i.reviews_required}  {i.policy}  {i.feedback_id}"
        )
        shown += 1
    if not shown:
        print(f"no review items{f' in queue {args.queue}' if args.queue else ''}")
    return 0


def cmd_review_claim(args: argparse.Namespace) -> int:
    r = _call(
        args,
        reviews_pb2_grpc.ReviewServiceStub,
        "ClaimReviewItem",
        reviews_pb2.ClaimReviewItemRequest(
            project=args.project, queue=args.queue, reviewer=args.reviewer or ""
        ),
    )
    if not r.HasField("item"):
        print("nothing to review")
        return 0
    print(
        f"claim {r.claim_id} on {r.item.id} until {r.lease_expires_at.ToDatetime().isoformat(timespec='seconds')}Z"
    )
    print(
        f"question: {r.item.interaction.input_messages[-1].content if r.item.interaction.input_messages else ''}"
    )
    print(f"answer:   {r.item.interaction.response}")
    print(f"feedback: {r.item.feedback.comment or ', '.join(r.item.feedback.categories)}")
    return 0


def cmd_review_resolve(args: argparse.Namespace) -> int:
    verdict = {"accept": reviews_pb2.REVIEW_VERDICT_ACCEPT, "reject": reviews_pb2.REVIEW_VERDICT_REJECT}[
        args.verdict
    ]
    r = _call(
        args,
        reviews_pb2_grpc.ReviewServiceStub,
        "ResolveReviewItem",
        reviews_pb2.ResolveReviewItemRequest(
            project=args.project,
            claim_id=args.claim_id,
            verdict=verdict,
            categories=args.category or [],
            correction=args.correction or "",
            comment=args.comment or "",
        ),
    )
    print(
        f"recorded feedback {r.feedback_id}; reviews {r.reviews_done}{' (item done)' if r.item_done else ''}"
    )
    return 0


def _client(parser: argparse.ArgumentParser) -> None:
    add_connection_args(parser)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server")


def _cmd(
    sub: Any, name: str, handler: Callable[[argparse.Namespace], int], help: str, client: bool = True
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help)
    if client:
        _client(parser)
    parser.set_defaults(handler=_run(handler))
    return parser


def register(sub: Any) -> None:
    """Add `policy`, `explain`, `prompt`, `dataset` and `review` to the top-level sub-commands."""
    policy = sub.add_parser("policy", help="policy files: validate, plan, apply, history, rollback, test")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    _cmd(psub, "validate", cmd_validate, "validate a policy directory offline", client=False).add_argument(
        "dir"
    )
    _cmd(
        psub, "test", cmd_test, "run the policy unit tests (DIR/tests/*/case.yaml) offline", client=False
    ).add_argument("dir")
    plan = _cmd(psub, "plan", cmd_plan, "diff against the live revision and backtest")
    plan.add_argument("dir")
    plan.add_argument("-out", "--out", default=None, help="save the plan for `policy apply FILE`")
    plan.add_argument(
        "--window", type=_duration, default=_duration("7d"), help="backtest window (default 7d)"
    )
    plan.add_argument("--json", action="store_true", help="print the machine-readable plan")
    plan.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 0 no changes, 1 error, 2 changes"
    )
    apply = _cmd(psub, "apply", cmd_apply, "apply a directory or a saved plan")
    apply.add_argument("target", metavar="DIR|PLANFILE")
    apply.add_argument(
        "--backfill", type=_duration, default=None, help="also route stored feedback of this window"
    )
    _cmd(psub, "history", cmd_history, "list applied revisions")
    _cmd(psub, "show", cmd_show, "print one revision as YAML").add_argument("revision", type=int)
    _cmd(
        psub, "rollback", cmd_rollback, "make a new revision with an earlier revision's content"
    ).add_argument("revision", type=int)

    _cmd(sub, "explain", cmd_explain, "the routing decisions stored for a feedback").add_argument(
        "feedback_id"
    )

    prompt = sub.add_parser("prompt", help="prompt versions and patches").add_subparsers(
        dest="prompt_command", required=True
    )
    get = _cmd(prompt, "get", cmd_prompt_get, "print a prompt version")
    get.add_argument("name")
    get.add_argument("--label", default="production", help="production, latest or a version number")
    _cmd(prompt, "patches", cmd_prompt_patches, "list patches").add_argument("prompt", nargs="?")
    _cmd(prompt, "approve", cmd_prompt_approve, "approve a proposed patch").add_argument("patch_id")
    reject = _cmd(prompt, "reject", cmd_prompt_reject, "reject a proposed patch")
    reject.add_argument("patch_id")
    reject.add_argument("--reason", default="")
    rollback = _cmd(prompt, "rollback", cmd_prompt_rollback, "move production back a version")
    rollback.add_argument("name")
    rollback.add_argument("--version", type=int, default=0, help="version to restore (default: the previous)")

    dataset = sub.add_parser("dataset", help="datasets").add_subparsers(dest="dataset_command", required=True)
    export = _cmd(dataset, "export", cmd_dataset_export, "export a dataset as JSONL")
    export.add_argument("name")
    export.add_argument(
        "-o",
        "--output",
        required=True,
        help="file to write (- for standard output; devices and FIFOs in place)",
    )
    export.add_argument("--format", choices=["openai_chat", "plain"], default="openai_chat")

    review = sub.add_parser("review", help="human review queues").add_subparsers(
        dest="review_command", required=True
    )
    _cmd(review, "list", cmd_review_list, "list open items").add_argument("queue", nargs="?")
    claim = _cmd(review, "claim", cmd_review_claim, "claim the next item of a queue")
    claim.add_argument("queue")
    claim.add_argument("--reviewer", default=None)
    resolve = _cmd(review, "resolve", cmd_review_resolve, "resolve a claim")
    resolve.add_argument("claim_id")
    resolve.add_argument("verdict", choices=["accept", "reject"])
    resolve.add_argument("--category", action="append")
    resolve.add_argument("--correction", default=None)
    resolve.add_argument("--comment", default=None)
