"""RoutingService: validate, plan, apply, history, rollback, evaluate, explain."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import yaml
from google.protobuf import json_format, struct_pb2
from sqlalchemy import select

from feedbackloop import auth, fields
from feedbackloop.auth import Scope
from feedbackloop.errors import InvalidArgument, NotFound, Violations
from feedbackloop.ingestion.convert import timestamp
from feedbackloop.paging import filter_digest
from feedbackloop.policy import CompiledPolicySet, PolicySet, diff_policy_sets, render_json, render_text
from feedbackloop.policy.event import EVENT_DEFAULTS, EventError, make_event
from feedbackloop.policy.event_limits import event_problems
from feedbackloop.policy.model import resource_to_document
from feedbackloop.routing import convert
from feedbackloop.routing.actions import WOULD_RUN, result
from feedbackloop.routing.events import build_event
from feedbackloop.routing.revisions import LiveSet, get_revision, list_revisions
from feedbackloop.routing.router import Router, render_backtest
from feedbackloop.routing.sink_common import PageLimits
from feedbackloop.store.lookups import feedback_by_ids
from feedbackloop.store.routing_models import DecisionRecord
from feedbackloop.v1 import routing_pb2, routing_pb2_grpc

log = logging.getLogger(__name__)

SERVICE = "/feedbackloop.v1.RoutingService/"
REQUIRED_SCOPES = {
    # Validating and planning compile, run and backtest rules the caller supplies: their own
    # scope, apart from read-only access (admin implies it).
    SERVICE + "ValidatePolicies": Scope.POLICY,
    SERVICE + "PlanPolicies": Scope.POLICY,
    SERVICE + "ApplyPolicies": Scope.ADMIN,
    SERVICE + "ListRevisions": Scope.READ,
    SERVICE + "GetRevision": Scope.READ,
    SERVICE + "Rollback": Scope.ADMIN,
    SERVICE + "Evaluate": Scope.READ,
    SERVICE + "Explain": Scope.READ,
}
DEFAULT_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=366)


def _window(field: str, message: Any, has: bool, default: timedelta | None) -> timedelta | None:
    if not has:
        return default
    v = Violations()
    window = fields.duration(v, field, message)
    v.raise_if_any()
    assert window is not None
    if window <= timedelta(0):
        raise InvalidArgument.single(field, f"must be positive (got {window.total_seconds():g}s)")
    if window > MAX_WINDOW:
        raise InvalidArgument.single(field, f"must be at most {MAX_WINDOW.days} days")
    return window


def _revision_bound(field: str, value: int) -> None:
    """Revisions are stored as 32-bit integers: a larger number names none, and the store would
    refuse to compare it (PostgreSQL's "integer out of range")."""
    if value > fields.INT32_MAX:
        raise InvalidArgument.single(field, f"must be at most {fields.INT32_MAX} (got {value})")


def _event_numbers(event: dict[str, Any]) -> dict[str, Any]:
    """Struct numbers are all doubles. A whole number in an int field of the event (`rating`,
    `turn_index`, the session counts) becomes an int, as a stored event has it, so that CEL
    arithmetic such as `feedback.rating + 1` works; everything else stays as given (a double
    field like `model_confidence`, and the values inside lists and maps)."""
    out: dict[str, Any] = {}
    for var, section in event.items():
        defaults = EVENT_DEFAULTS.get(var, {})
        if isinstance(section, dict):
            out[var] = {k: _as_int(v) if _is_int_field(defaults.get(k)) else v for k, v in section.items()}
        else:
            out[var] = section  # make_event names what is wrong with it
    return out


def _is_int_field(default: Any) -> bool:
    return isinstance(default, int) and not isinstance(default, bool)


def _as_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self, router: Router, pages: PageLimits | None = None) -> None:
        self._router = router
        self._pages = pages or PageLimits()
        self._db = router.db
        self._live = router.live

    def ValidatePolicies(
        self, request: routing_pb2.ValidatePoliciesRequest, context: grpc.ServicerContext
    ) -> routing_pb2.ValidatePoliciesResponse:
        auth.current_principal().project_for(request.project)
        policy_set, errors = convert.load_files(request.files)
        return routing_pb2.ValidatePoliciesResponse(
            valid=policy_set is not None,
            problems=[convert.problem(e) for e in errors],
            content_hash=policy_set.content_hash() if policy_set else "",
            resource_count=len(policy_set.resources) if policy_set else 0,
        )

    def PlanPolicies(
        self, request: routing_pb2.PlanPoliciesRequest, context: grpc.ServicerContext
    ) -> routing_pb2.PlanPoliciesResponse:
        project = auth.current_principal().project_for(request.project)
        window = _window(
            "backtest_window", request.backtest_window, request.HasField("backtest_window"), DEFAULT_WINDOW
        )
        assert window is not None
        policy_set = convert.require_valid(request.files)
        live = self._live.refresh(project)
        plan = diff_policy_sets(live.policy_set if live else None, policy_set)
        text = render_text(plan)
        response = routing_pb2.PlanPoliciesResponse(
            base_revision=live.revision if live else 0,
            has_changes=plan.has_changes,
            plan_json=render_json(plan),
            content_hash=policy_set.content_hash(),
        )
        if not request.skip_backtest:
            candidate = LiveSet(0, policy_set, CompiledPolicySet.from_policy_set(policy_set))
            end = datetime.now(UTC)
            backtest = self._router.backtest(project, candidate, end - window, end)
            text += "\n" + render_backtest(backtest)
            response.backtest.CopyFrom(_backtest_to_proto(backtest))
        response.plan_text = text
        return response

    def ApplyPolicies(
        self, request: routing_pb2.ApplyPoliciesRequest, context: grpc.ServicerContext
    ) -> routing_pb2.ApplyPoliciesResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        backfill = _window(
            "backfill_window", request.backfill_window, request.HasField("backfill_window"), None
        )
        if request.HasField("expected_revision") and request.expected_revision < 0:
            raise InvalidArgument.single("expected_revision", "must not be negative")
        _revision_bound("expected_revision", request.expected_revision)
        policy_set = convert.require_valid(request.files)
        before = self._live.refresh(project)
        plan_text = render_text(diff_policy_sets(before.policy_set if before else None, policy_set))
        info, changed = self._live.apply(
            project,
            policy_set,
            expected_revision=request.expected_revision if request.HasField("expected_revision") else None,
            applied_by=principal.key_id,
            message=request.message,
        )
        response = routing_pb2.ApplyPoliciesResponse(
            revision=convert.revision_to_proto(info), changed=changed, plan_text=plan_text
        )
        if backfill is not None:
            response.backfill.CopyFrom(self._backfill(project, backfill))
        return response

    def _backfill(self, project: str, window: timedelta) -> routing_pb2.BackfillSummary:
        live = self._live.get(project)
        summary = routing_pb2.BackfillSummary()
        if live is None:
            return summary
        end = datetime.now(UTC)
        for feedback_id in self._router.feedback_in_window(project, end - window, end):
            summary.feedback_count += 1
            try:
                result = self._router.route(project, feedback_id, live)
            except Exception:
                log.exception("backfill: routing %s failed", feedback_id)
                summary.failed += 1
                continue
            summary.matched += sum(1 for d, _ in result.decisions if d.outcome.value == "matched")
            summary.actions_created += result.created
        return summary

    def ListRevisions(
        self, request: routing_pb2.ListRevisionsRequest, context: grpc.ServicerContext
    ) -> routing_pb2.ListRevisionsResponse:
        project = auth.current_principal().project_for(request.project)
        revisions, live, next_token = list_revisions(
            self._db, project, self._pages.size(request.page_size), request.page_token, filter_digest(request)
        )
        return routing_pb2.ListRevisionsResponse(
            revisions=[convert.revision_to_proto(r) for r in revisions],
            live_revision=live,
            next_page_token=next_token,
        )

    def GetRevision(
        self, request: routing_pb2.GetRevisionRequest, context: grpc.ServicerContext
    ) -> routing_pb2.GetRevisionResponse:
        project = auth.current_principal().project_for(request.project)
        if request.revision < 0:
            raise InvalidArgument.single("revision", "must not be negative")
        _revision_bound("revision", request.revision)
        info = get_revision(self._db, project, request.revision)
        docs = [resource_to_document(r) for r in PolicySet.from_canonical(info.canonical).resources]
        return routing_pb2.GetRevisionResponse(
            revision=convert.revision_to_proto(info),
            canonical_json=json.dumps(info.canonical, sort_keys=True, indent=2, ensure_ascii=False),
            yaml=yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True),
        )

    def Rollback(
        self, request: routing_pb2.RollbackRequest, context: grpc.ServicerContext
    ) -> routing_pb2.RollbackResponse:
        principal = auth.current_principal()
        project = principal.project_for(request.project)
        if request.revision <= 0:
            raise InvalidArgument.single("revision", "must be a revision number (1 or more)")
        _revision_bound("revision", request.revision)
        _revision_bound("expected_revision", request.expected_revision)
        info = self._live.rollback(
            project,
            request.revision,
            applied_by=principal.key_id,
            expected_revision=request.expected_revision if request.HasField("expected_revision") else None,
        )
        return routing_pb2.RollbackResponse(revision=convert.revision_to_proto(info))

    def Evaluate(
        self, request: routing_pb2.EvaluateRequest, context: grpc.ServicerContext
    ) -> routing_pb2.EvaluateResponse:
        project = auth.current_principal().project_for(request.project)
        if request.revision < 0:
            raise InvalidArgument.single("revision", "must not be negative")
        _revision_bound("revision", request.revision)
        target = request.WhichOneof("target")
        if target is None:
            raise InvalidArgument.single("target", "set feedback_id or event")
        if target == "feedback_id":
            fields.require_id("feedback_id", request.feedback_id)
            with self._db.read() as session:
                fb = feedback_by_ids(session, project, [request.feedback_id]).get(request.feedback_id)
                if fb is None:
                    raise NotFound("feedback_id", f"no feedback {request.feedback_id}")
                event = build_event(session, fb)
        else:
            try:
                event = make_event(_event_numbers(json_format.MessageToDict(request.event)))
            except EventError as error:
                raise InvalidArgument.single("event", str(error)) from None
            # The live conditions' cost bounds hold only on events within ingestion's sizes.
            v = Violations()
            for path, reason in event_problems(event):
                v.add(f"event.{path}", reason)
            v.raise_if_any()
        if request.revision:
            live: LiveSet | None = self._live.compiled(project, request.revision)
        else:
            live = self._live.refresh(project)
        if live is None:
            raise NotFound("revision", "no policy revision is applied yet")
        decisions = self._router.dry_run(project, live, event, stored=target == "feedback_id")
        out = routing_pb2.EvaluateResponse(revision=live.revision)
        for d in decisions:
            results = [result(i, a, WOULD_RUN) for i, a in enumerate(d.actions)]
            out.decisions.append(convert.decision_to_proto(d, results))
        struct = struct_pb2.Struct()
        struct.update(json.loads(json.dumps(event, default=str)))
        out.event.CopyFrom(struct)
        return out

    def Explain(
        self, request: routing_pb2.ExplainRequest, context: grpc.ServicerContext
    ) -> routing_pb2.ExplainResponse:
        project = auth.current_principal().project_for(request.project)
        fields.require_id("feedback_id", request.feedback_id)
        with self._db.read() as session:
            if not feedback_by_ids(session, project, [request.feedback_id]):
                raise NotFound("feedback_id", f"no feedback {request.feedback_id}")
            rows = session.scalars(
                select(DecisionRecord)
                .where(
                    DecisionRecord.project_id == project, DecisionRecord.feedback_id == request.feedback_id
                )
                .order_by(DecisionRecord.revision, DecisionRecord.position)
            ).all()
        return routing_pb2.ExplainResponse(records=[convert.record_to_proto(r) for r in rows])


def _backtest_to_proto(backtest: dict[str, Any]) -> routing_pb2.Backtest:
    out = routing_pb2.Backtest(
        start=timestamp(backtest["start"]),
        end=timestamp(backtest["end"]),
        feedback_count=backtest["feedback_count"],
    )
    for name in backtest["order"]:
        s = backtest["stats"][name]
        policy = out.policies.add(
            policy=name,
            matched=s["outcomes"].get("matched", 0),
            outcome_counts=s["outcomes"],
            sample_feedback_ids=s["samples"],
        )
        for index in sorted(s["actions"]):
            a = s["actions"][index]
            action = a["action"]
            policy.actions.add(
                index=index,
                type=action.type,
                target=action.target,
                count=len(a["subjects"]),
                sample_feedback_ids=a["samples"],
            )
    return out
