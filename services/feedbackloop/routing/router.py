"""Route stored feedback: evaluate the live revision, run actions, store decision records.

One feedback is routed in one write transaction: its decision records (every policy
evaluated, non-matches included) and every action effect commit together. A feedback that
already has decision records for the revision is not routed again, and every effect is keyed
so that a concurrent or retried run finds it; the pipeline's retries can never double
anything. Slow outside calls (the patch generator, the embedding model) happen before the
transaction opens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc
from opentelemetry import trace
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedbackloop.ingestion.convert import feedback_to_proto, interaction_to_proto
from feedbackloop.policy import Decision, Outcome
from feedbackloop.policy.engine import Condition, CooldownMemory, EvaluationState
from feedbackloop.policy.event import field_value
from feedbackloop.policy.model import DatasetAdd, HumanReview, PromptPatch, RoutingPolicy
from feedbackloop.routing import actions
from feedbackloop.routing.events import build_event, build_events
from feedbackloop.routing.revisions import LivePolicies, LiveSet
from feedbackloop.routing.similarity import Embed, SimilarFeedback
from feedbackloop.store.db import Database
from feedbackloop.store.lookups import feedback_by_ids
from feedbackloop.store.models import Feedback, new_id, utcnow
from feedbackloop.store.routing_models import DecisionRecord, PromptPatchRow, ReviewItemRow
from feedbackloop.telemetry import current_ids, tracer
from feedbackloop.v1 import patch_generator_pb2, patch_generator_pb2_grpc

log = logging.getLogger(__name__)

GENERATOR_TIMEOUT_SECONDS = 30.0
# How far back an aggregate looks for the review items it opened before their complaint had a
# lasting group: its latest firings, and of their items the latest untied ones.
MAX_EARLIER_FIRINGS = 200
MAX_UNTIED_ITEMS = 20
MAX_GENERATOR_EVIDENCE = 20


def group_of(policy: RoutingPolicy, event: Mapping[str, Any]) -> dict[str, str]:
    return {
        path: field_value(event, path) for path in (policy.aggregate.group_by if policy.aggregate else ())
    }


class StoreState(EvaluationState):
    """EvaluationState over the store: cooldowns from matched decision records, aggregates from
    the SimilarFeedback hook. Remembers the similar ids per policy for the action evidence."""

    def __init__(
        self,
        session: Session,
        project_id: str,
        feedback_id: str,
        similar: SimilarFeedback | None,
        *,
        inline: bool = False,
        track_cooldown_in_memory: bool = False,
    ) -> None:
        """`inline`: the event is not (or not as stored) in the store, so aggregates are counted
        around its own text; `feedback_id` is still excluded from cooldowns and neighbours."""
        self._session = session
        self._project = project_id
        self._feedback_id = feedback_id
        self._inline = inline or not feedback_id
        self._similar = similar
        self.evidence: dict[str, list[str]] = {}
        self._memory = CooldownMemory() if track_cooldown_in_memory else None

    def for_feedback(self, feedback_id: str) -> None:
        self._feedback_id = feedback_id
        self.evidence = {}

    def in_cooldown(self, policy: RoutingPolicy, group_key: str, now: datetime) -> bool:
        if self._memory is not None:
            return self._memory.in_cooldown(policy, group_key, now)
        start = now - timedelta(seconds=policy.cooldown_seconds)
        found = self._session.scalar(
            select(DecisionRecord.id)
            .where(
                DecisionRecord.project_id == self._project,
                DecisionRecord.policy == policy.name,
                DecisionRecord.group_key == group_key,
                DecisionRecord.outcome == Outcome.MATCHED.value,
                DecisionRecord.event_at > start,
                DecisionRecord.event_at <= now,
                DecisionRecord.feedback_id != self._feedback_id,
            )
            .limit(1)
        )
        return found is not None

    def similar_count(
        self, policy: RoutingPolicy, event: Mapping[str, Any], group_key: str, condition: Condition
    ) -> int:
        assert policy.aggregate is not None
        if self._similar is None:
            self.evidence[policy.name] = [self._feedback_id]
            return 1
        group = group_of(policy, event)
        threshold = policy.aggregate.min_similarity
        window = timedelta(seconds=policy.aggregate.window_seconds)
        if self._inline:  # a dry run of an event as given: it counts itself
            neighbours = self._similar.similar_to_event(
                self._project,
                event,
                group=group,
                min_similarity=threshold,
                window=window,
                condition=condition,
            )
            self.evidence[policy.name] = neighbours
            return 1 + len(neighbours)
        ids = self._similar.similar_feedback(
            self._project,
            self._feedback_id,
            group=group,
            min_similarity=threshold,
            window=window,
            condition=condition,
        )
        self.evidence[policy.name] = ids
        return len(ids)

    def record_match(self, policy: RoutingPolicy, group_key: str, now: datetime) -> None:
        if self._memory is not None:
            self._memory.record_match(policy, group_key, now)


@dataclass
class RouteResult:
    feedback_id: str
    revision: int
    routed: bool  # False: already routed under this revision, or no revision is live
    decisions: list[tuple[Decision, list[dict[str, Any]]]] = field(default_factory=list)

    @property
    def created(self) -> int:
        return sum(1 for _, results in self.decisions for r in results if r["status"] == actions.CREATED)


class Router:
    def __init__(
        self,
        db: Database,
        live: LivePolicies,
        similar: SimilarFeedback | None = None,
        embed: Embed | None = None,
        generator_channel: Callable[[str], grpc.Channel] = grpc.insecure_channel,
    ) -> None:
        self.db = db
        self.live = live
        self.similar = similar
        self.embed = embed
        self._channel = generator_channel

    # --- routing for real ---

    def route(self, project_id: str, feedback_id: str, live: LiveSet | None = None) -> RouteResult:
        live = live or self.live.get(project_id)
        if live is None:
            return RouteResult(feedback_id, 0, False)
        with tracer().start_as_current_span(
            "routing.evaluate",
            attributes={"feedbackloop.feedback_id": feedback_id, "policy.revision": live.revision},
        ):
            with self.db.read() as session:
                if self._already_routed(session, project_id, feedback_id, live.revision):
                    return RouteResult(feedback_id, live.revision, False)
                fb = feedback_by_ids(session, project_id, [feedback_id]).get(feedback_id)
                if fb is None:
                    raise LookupError(f"feedback {feedback_id} not found in project {project_id}")
                event = build_event(session, fb)
                state = StoreState(session, project_id, feedback_id, self.similar)
                decisions = live.compiled.evaluate(event, state=state)
                contexts = self._contexts(session, project_id, live, fb, decisions, state.evidence)
            for decision, ctx in zip(decisions, contexts, strict=True):
                if ctx is not None:
                    self._precompute(ctx, decision)
        trace_id, _ = current_ids()
        try:
            return self._commit(project_id, live, fb, decisions, contexts, trace_id)
        except IntegrityError:
            # A concurrent run of the same feedback committed first (PostgreSQL).
            return RouteResult(feedback_id, live.revision, False)

    @staticmethod
    def _already_routed(session: Session, project_id: str, feedback_id: str, revision: int) -> bool:
        return (
            session.scalar(
                select(DecisionRecord.id)
                .where(
                    DecisionRecord.project_id == project_id,
                    DecisionRecord.feedback_id == feedback_id,
                    DecisionRecord.revision == revision,
                )
                .limit(1)
            )
            is not None
        )

    def _contexts(
        self,
        session: Session,
        project_id: str,
        live: LiveSet,
        fb: Feedback,
        decisions: Sequence[Decision],
        evidence: Mapping[str, list[str]],
    ) -> list[actions.ActionContext | None]:
        out: list[actions.ActionContext | None] = []
        for d in decisions:
            if d.outcome != Outcome.MATCHED:
                out.append(None)
                continue
            policy = live.policy_set.routing_policies[d.policy]
            ids = evidence.get(d.policy) or [fb.id]
            out.append(
                actions.ActionContext(
                    project_id, live.revision, policy, live.policy_set, fb, d.group_key, ids
                )
            )
        return out

    def _precompute(self, ctx: actions.ActionContext, decision: Decision) -> None:
        aggregate = ctx.policy.aggregate
        if (
            aggregate is not None
            and self.similar is not None
            and any(isinstance(action, HumanReview) for action in decision.actions)
        ):
            # A centroid is nearer its members than they are to each other, so holding the
            # feedback to the policy's own similarity bound never ties it to a looser group than
            # the aggregate that fired.
            bound = aggregate.min_similarity
            ctx.issue_group_id = self.similar.issue_groups(
                ctx.project_id, [ctx.feedback.id], min_similarity=bound
            )[ctx.feedback.id]
            if ctx.issue_group_id:
                untied = self._untied_items(ctx)
                of = self.similar.issue_groups(ctx.project_id, list(untied.values()), min_similarity=bound)
                ctx.same_group_items = [item for item, fid in untied.items() if of[fid] == ctx.issue_group_id]
        for index, action in enumerate(decision.actions):
            if isinstance(action, PromptPatch) and action.strategy == "generator":
                with self.db.read() as session:
                    exists = session.scalar(
                        select(PromptPatchRow.id).where(
                            PromptPatchRow.project_id == ctx.project_id,
                            PromptPatchRow.dedup_key == ctx.dedup_key(index),
                        )
                    )
                if exists is None:
                    try:
                        ctx.generated[index] = self._generate(ctx, action)
                    except grpc.RpcError as error:
                        # The step fails and is retried by the pipeline: the generator may be back.
                        raise RuntimeError(
                            f"patch generator at {action.generator_target} failed: "
                            f"{error.code().name}: {error.details()}"
                        ) from None
            elif isinstance(action, DatasetAdd) and ctx.feedback.interaction is not None:
                if self.embed is not None:
                    vector = self.embed([actions.dataset_text(ctx.feedback)])[0]
                    ctx.vectors[index] = [float(x) for x in vector]
                with self.db.read() as session:
                    ctx.nearest[index] = actions.nearest_item(session, ctx, action, ctx.vectors.get(index))

    def _untied_items(self, ctx: actions.ActionContext) -> dict[str, str]:
        """Review items this policy and group opened before any lasting group was near their
        feedback (item id -> feedback id), among its `MAX_EARLIER_FIRINGS` latest firings.

        Read through the decision records' cooldown index, so the cost is bounded whatever the
        queue's history; only the items opened before the first TopIssues call are untied."""
        with self.db.read() as session:
            decided = session.scalars(
                select(DecisionRecord.actions)
                .where(
                    DecisionRecord.project_id == ctx.project_id,
                    DecisionRecord.policy == ctx.policy.name,
                    DecisionRecord.group_key == ctx.group_key,
                    DecisionRecord.outcome == Outcome.MATCHED.value,
                )
                .order_by(DecisionRecord.event_at.desc())
                .limit(MAX_EARLIER_FIRINGS)
            ).all()
            ids = {
                r["resource_id"]
                for results in decided
                for r in results or []
                if r.get("type") == HumanReview.type and r.get("resource_id")
            }
            if not ids:
                return {}
            rows = session.execute(
                select(ReviewItemRow.id, ReviewItemRow.feedback_id)
                .where(
                    ReviewItemRow.project_id == ctx.project_id,
                    ReviewItemRow.id.in_(sorted(ids)),
                    ReviewItemRow.dedup_key.startswith(actions.FIRED_KEY_PREFIX),
                )
                .order_by(ReviewItemRow.created_at.desc())
                .limit(MAX_UNTIED_ITEMS)
            ).all()
        return {row.id: row.feedback_id for row in rows}

    def _generate(self, ctx: actions.ActionContext, action: PromptPatch) -> tuple[str, str]:
        with self.db.read() as session:
            _, version = actions.production_version(session, ctx.project_id, action.prompt)
            evidence = feedback_by_ids(session, ctx.project_id, ctx.evidence[:MAX_GENERATOR_EVIDENCE])
            request = patch_generator_pb2.GeneratePatchRequest(
                project=ctx.project_id,
                prompt_name=action.prompt,
                prompt_version=version.version,
                template=version.template,
                policy=ctx.policy.name,
            )
            for fid in ctx.evidence[:MAX_GENERATOR_EVIDENCE]:
                row = evidence.get(fid)
                if row is None:
                    continue
                item = request.evidence.add(feedback=feedback_to_proto(row))
                if row.interaction is not None:
                    item.interaction.CopyFrom(interaction_to_proto(row.interaction))
        with tracer().start_as_current_span(
            "routing.patch_generator", kind=trace.SpanKind.CLIENT, attributes={"rpc.system": "grpc"}
        ):
            channel = self._channel(action.generator_target)
            try:
                stub = patch_generator_pb2_grpc.PatchGeneratorServiceStub(channel)
                response = stub.GeneratePatch(request, timeout=GENERATOR_TIMEOUT_SECONDS)
            finally:
                channel.close()
        return response.template, response.rationale

    def _commit(
        self,
        project_id: str,
        live: LiveSet,
        fb: Feedback,
        decisions: Sequence[Decision],
        contexts: Sequence[actions.ActionContext | None],
        trace_id: str,
    ) -> RouteResult:
        out = RouteResult(fb.id, live.revision, True)
        with self.db.write() as session:
            if self._already_routed(session, project_id, fb.id, live.revision):
                return RouteResult(fb.id, live.revision, False)
            for position, (decision, ctx) in enumerate(zip(decisions, contexts, strict=True)):
                results: list[dict[str, Any]] = []
                if ctx is not None:
                    ctx.feedback = fb
                    for index, action in enumerate(decision.actions):
                        results.append(self._run_action(session, ctx, index, action))
                session.add(
                    DecisionRecord(
                        id=new_id("dec"),
                        project_id=project_id,
                        feedback_id=fb.id,
                        revision=live.revision,
                        position=position,
                        policy=decision.policy,
                        outcome=decision.outcome.value,
                        reason=decision.reason,
                        group_key=decision.group_key,
                        actions=results,
                        trace_id=trace_id,
                        event_at=fb.occurred_at,
                        evaluated_at=utcnow(),
                    )
                )
                out.decisions.append((decision, results))
        return out

    @staticmethod
    def _run_action(session: Session, ctx: actions.ActionContext, index: int, action: Any) -> dict[str, Any]:
        with tracer().start_as_current_span(
            f"routing.action.{action.type}",
            attributes={
                "policy": ctx.policy.name,
                "action.index": index,
                "feedbackloop.feedback_id": ctx.feedback.id,
            },
        ) as span:
            try:
                res = actions.run_action(session, ctx, index, action)
            except IntegrityError:
                res = actions.result(index, action, actions.EXISTING, detail="created concurrently")
            except Exception as exc:
                log.exception("action %s#%d failed", ctx.policy.name, index)
                res = actions.result(index, action, actions.FAILED, detail=f"{type(exc).__name__}: {exc}")
            span.set_attribute("action.status", res["status"])
            if res["resource_id"]:
                span.set_attribute("action.resource_id", res["resource_id"])
            return res

    # --- dry runs ---

    def dry_run(
        self, project_id: str, live: LiveSet, event: Mapping[str, Any], *, stored: bool = False
    ) -> list[Decision]:
        """Decisions `live` makes for `event` without acting. `stored`: the event was built from
        the stored feedback it names; otherwise (an inline event, perhaps an edited copy of a
        stored one) aggregates are counted around the event's own text."""
        feedback_id = str((event.get("feedback") or {}).get("id", ""))
        with self.db.read() as session:
            state = StoreState(session, project_id, feedback_id, self.similar, inline=not stored)
            return live.compiled.evaluate(event, state=state)

    def feedback_in_window(self, project_id: str, start: datetime, end: datetime) -> list[str]:
        with self.db.read() as session:
            return list(
                session.scalars(
                    select(Feedback.id)
                    .where(
                        Feedback.project_id == project_id,
                        Feedback.occurred_at >= start,
                        Feedback.occurred_at < end,
                    )
                    .order_by(Feedback.occurred_at, Feedback.id)
                )
            )

    def backtest(self, project_id: str, live: LiveSet, start: datetime, end: datetime) -> dict[str, Any]:
        """What `live` would have decided over stored feedback in [start, end), without acting.

        Cooldowns run in memory in time order (as if the set had been live); effects are
        counted once per feedback, or once per group for aggregate policies (review items once
        per complaint, see `_ReviewItems`)."""
        ids = self.feedback_in_window(project_id, start, end)
        order = live.compiled.policy_names
        stats: dict[str, dict[str, Any]] = {
            name: {"outcomes": {}, "samples": [], "actions": {}} for name in order
        }
        reviews: list[tuple[dict[str, Any], str, str, list[str], float]] = []
        with self.db.read() as session:
            state = StoreState(session, project_id, "", self.similar, track_cooldown_in_memory=True)
            for chunk_start in range(0, len(ids), 200):
                rows = feedback_by_ids(session, project_id, ids[chunk_start : chunk_start + 200])
                events = build_events(session, list(rows.values()))
                for fid in ids[chunk_start : chunk_start + 200]:
                    state.for_feedback(fid)
                    for d in live.compiled.evaluate(events[fid], state=state):
                        s = stats[d.policy]
                        s["outcomes"][d.outcome.value] = s["outcomes"].get(d.outcome.value, 0) + 1
                        if d.outcome != Outcome.MATCHED:
                            continue
                        if len(s["samples"]) < 5:
                            s["samples"].append(fid)
                        policy = live.policy_set.routing_policies[d.policy]
                        subject = actions.subject_of(policy, fid, d.group_key)
                        for index, action in enumerate(d.actions):
                            a = s["actions"].setdefault(
                                index,
                                {"action": action, "subjects": set(), "samples": [], "items": _ReviewItems()},
                            )
                            if isinstance(action, HumanReview) and policy.aggregate is not None:
                                # Landed once every firing's lasting group is known (one read).
                                evidence = list(state.evidence.get(d.policy) or [fid])
                                bound = policy.aggregate.min_similarity
                                reviews.append((a, d.group_key, fid, evidence, bound))
                                continue
                            if subject not in a["subjects"]:
                                a["subjects"].add(subject)
                                if len(a["samples"]) < 5:
                                    a["samples"].append(fid)
        groups_of: dict[tuple[str, float], str] = {}
        if self.similar is not None:
            for bound in sorted({bound for *_, bound in reviews}):
                fired = [fid for _, _, fid, _, b in reviews if b == bound]
                found = self.similar.issue_groups(project_id, fired, min_similarity=bound)
                groups_of.update({(fid, bound): group for fid, group in found.items()})
        for a, group_key, fid, evidence, bound in reviews:
            subject = a["items"].land(group_key, fid, evidence, groups_of.get((fid, bound), ""))
            if subject not in a["subjects"]:
                a["subjects"].add(subject)
                if len(a["samples"]) < 5:
                    a["samples"].append(fid)
        return {"start": start, "end": end, "feedback_count": len(ids), "order": order, "stats": stats}


class _ReviewItems:
    """The review items an aggregate's firings land on in a backtest, as live routing finds them
    (`actions.run_human_review`): by the feedback's lasting group, else by an earlier firing in
    the evidence (one tied to another group excepted); a firing that finds none opens one.
    Today's lasting groups stand in for those that existed at each firing."""

    def __init__(self) -> None:
        self._by_group: dict[tuple[str, str], str] = {}
        self._group_of_item: dict[str, str] = {}
        self._fired: dict[tuple[str, str], str] = {}

    def land(self, group_key: str, feedback_id: str, evidence: Sequence[str], issue_group: str) -> str:
        item = self._by_group.get((group_key, issue_group)) if issue_group else None
        if item is None:
            for earlier in evidence:
                candidate = self._fired.get((group_key, earlier))
                tied = self._group_of_item.get(candidate, "") if candidate else ""
                if candidate is not None and not (issue_group and tied and tied != issue_group):
                    item = candidate
                    break
        if item is None:
            item = f"{actions.FIRED_KEY_PREFIX}{feedback_id}:{group_key}"
        if issue_group and not self._group_of_item.get(item):
            self._group_of_item[item] = issue_group
            self._by_group[(group_key, issue_group)] = item
        self._fired[(group_key, feedback_id)] = item
        return item


def render_backtest(backtest: Mapping[str, Any]) -> str:
    days = (backtest["end"] - backtest["start"]).total_seconds() / 86400
    lines = [f"Backtest over {backtest['feedback_count']} feedback event(s) of the last {days:g} day(s):"]
    for name in backtest["order"]:
        s = backtest["stats"][name]
        matched = s["outcomes"].get(Outcome.MATCHED.value, 0)
        others = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items()) if k != Outcome.MATCHED.value)
        lines.append(f"  {name}: {matched} matched" + (f" ({others})" if others else ""))
        for index in sorted(s["actions"]):
            a = s["actions"][index]
            action = a["action"]
            noun = {
                "prompt_patch": "patch(es)",
                "dataset_add": "dataset item(s)",
                "human_review": "review item(s)",
            }
            lines.append(
                f"    actions[{index}] {action.type} {action.target}: would create {len(a['subjects'])} "
                f"{noun[action.type]} (e.g. {', '.join(a['samples'])})"
            )
    return "\n".join(lines) + "\n"
