"""Action effects: prompt patches, dataset items, review items. Every one is idempotent.

Each effect has a dedup key under a unique constraint, so running the same decision again finds
the effect and reports it as existing:
- patches, per project, and dataset items, per project and dataset: the policy, the action
  index and the subject (`fb:<feedback id>`, or `group:<group key>` for aggregate policies);
- review items, per project and queue: the feedback (`fb:<id>`), or for aggregate policies the
  complaint (see `review_key`), so an item a queue has held is never added again, whichever
  policy or action index sends it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from feedbackloop.policy.durations import parse_positive_duration
from feedbackloop.policy.engine import Outcome
from feedbackloop.policy.model import (
    PLACEHOLDER,
    DatasetAdd,
    HumanReview,
    PolicySet,
    PromptPatch,
    RoutingPolicy,
)
from feedbackloop.recall.text import category_words, last_user_message, last_user_text
from feedbackloop.routing.similarity import best_match
from feedbackloop.store.lookups import chunks
from feedbackloop.store.models import Feedback, new_id, utcnow
from feedbackloop.store.routing_models import (
    DatasetItemRow,
    DecisionRecord,
    PromptPatchRow,
    PromptState,
    PromptVersion,
    ReviewItemRow,
)

CREATED, EXISTING, SKIPPED, FAILED, WOULD_RUN = "created", "existing", "skipped", "failed", "would_run"


@dataclass(frozen=True)
class NearestItem:
    """The most similar item of a dataset to a new one, and which items were compared."""

    item_id: str
    score: float
    compared: frozenset[str]


@dataclass
class ActionContext:
    """What every action of one matched decision needs."""

    project_id: str
    revision: int
    policy: RoutingPolicy
    policy_set: PolicySet
    feedback: Feedback
    group_key: str
    evidence: list[str]
    now: datetime = field(default_factory=utcnow)
    # The lasting TopIssues group of the feedback ("" when none is near it), looked up before
    # the write transaction opens: what an aggregate's review item is about.
    issue_group_id: str = ""
    # Review items this policy opened, before any lasting group existed, for feedback now near
    # `issue_group_id`: the same complaint, met again past the aggregate's window.
    same_group_items: list[str] = field(default_factory=list)
    # Pre-computed outside the write transaction, by action index: generator proposals, dataset
    # vectors, and the nearest dataset item among those that existed then (`nearest_item`).
    generated: dict[int, tuple[str, str]] = field(default_factory=dict)
    vectors: dict[int, list[float]] = field(default_factory=dict)
    nearest: dict[int, NearestItem] = field(default_factory=dict)

    def dedup_key(self, index: int) -> str:
        return f"{self.policy.name}#{index}:{self.subject}"

    @property
    def subject(self) -> str:
        return subject_of(self.policy, self.feedback.id, self.group_key)


def subject_of(policy: RoutingPolicy, feedback_id: str, group_key: str) -> str:
    """What an action's effect is about: the group for aggregate policies, else the feedback."""
    if policy.aggregate is not None:
        return f"group:{group_key}"
    return f"fb:{feedback_id}"


def result(index: int, action: Any, status: str, resource_id: str = "", detail: str = "") -> dict[str, Any]:
    return {
        "index": index,
        "type": action.type,
        "target": action.target,
        "status": status,
        "resource_id": resource_id,
        "detail": detail,
    }


def template_variables(fb: Feedback, evidence: Sequence[str]) -> dict[str, str]:
    """Placeholders a patch template may use ({{name}}); unknown ones are left as written."""
    it = fb.interaction
    categories = ", ".join(category_words(c) for c in fb.category_names)
    question = last_user_message(it)
    summary = fb.comment.strip() or fb.correction.strip() or categories or question
    return {
        "feedback_id": fb.id,
        "comment": fb.comment,
        "correction": fb.correction,
        "categories": categories,
        "thumb": fb.thumb,
        "rating": "" if fb.rating is None else str(fb.rating),
        "implicit_text": fb.implicit_text,
        "user_role": fb.user_role,
        "question": question,
        "input": question,
        "response": it.response if it is not None else "",
        "answer": it.response if it is not None else "",
        "prompt_name": it.prompt_name if it is not None else "",
        "model_version": it.model_version if it is not None else "",
        "summary": summary,
        "count": str(len(evidence)),
        "evidence_ids": ", ".join(evidence),
    }


def render(template: str, variables: Mapping[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), template).strip()


def patched_template(base: str, strategy: str, content: str) -> str:
    if strategy == "generator":
        return content
    return base.rstrip("\n") + "\n\n" + content.strip() + "\n"


def production_version(session: Session, project_id: str, name: str) -> tuple[PromptState, PromptVersion]:
    state = session.scalar(
        select(PromptState).where(PromptState.project_id == project_id, PromptState.name == name)
    )
    if state is None:
        raise LookupError(f'prompt "{name}" has no versions (is it in the applied policy set?)')
    version = session.scalar(
        select(PromptVersion).where(
            PromptVersion.project_id == project_id,
            PromptVersion.name == name,
            PromptVersion.version == state.production_version,
        )
    )
    assert version is not None
    return state, version


def apply_patch(session: Session, patch: PromptPatchRow, decided_by: str) -> PromptVersion:
    """Make `patch` a new production version on top of the current production template."""
    state, base = production_version(session, patch.project_id, patch.prompt)
    state.latest_version += 1
    state.production_version = state.latest_version
    state.updated_at = utcnow()
    version = PromptVersion(
        id=new_id("pv"),
        project_id=patch.project_id,
        name=patch.prompt,
        version=state.latest_version,
        template=patched_template(base.template, patch.strategy, patch.content),
        origin="patch",
        patch_id=patch.id,
        revision=patch.revision,
    )
    session.add(version)
    patch.status = "applied"
    patch.result_version = version.version
    patch.decided_by = decided_by
    patch.decided_at = utcnow()
    return version


def run_prompt_patch(session: Session, ctx: ActionContext, index: int, action: PromptPatch) -> dict[str, Any]:
    key = ctx.dedup_key(index)
    existing = session.scalar(
        select(PromptPatchRow).where(
            PromptPatchRow.project_id == ctx.project_id, PromptPatchRow.dedup_key == key
        )
    )
    if existing is not None:
        return result(index, action, EXISTING, existing.id, f"patch already {existing.status}")
    note = ""
    if action.strategy == "generator":
        generated = ctx.generated.get(index)
        if generated is None:
            return result(index, action, FAILED, detail="the patch generator was not called")
        content, note = generated
        if not content.strip():
            return result(index, action, SKIPPED, detail="the patch generator proposed no change")
    else:
        content = render(action.template, template_variables(ctx.feedback, ctx.evidence))
    patch = PromptPatchRow(
        id=new_id("pp"),
        project_id=ctx.project_id,
        dedup_key=key,
        prompt=action.prompt,
        policy=ctx.policy.name,
        action_index=index,
        revision=ctx.revision,
        strategy=action.strategy,
        content=content,
        status="proposed",
        evidence=list(ctx.evidence),
        note=note,
        created_at=utcnow(),
    )
    session.add(patch)
    session.flush()
    if action.approval == "auto":
        version = apply_patch(session, patch, decided_by=f"policy:{ctx.policy.name}")
        return result(
            index, action, CREATED, patch.id, f"applied as version {version.version} (approval auto)"
        )
    return result(index, action, CREATED, patch.id, "proposed; waiting for approval")


def dataset_text(fb: Feedback) -> str:
    """What dataset dedup compares: the question and the ideal (or actual) answer."""
    question = last_user_message(fb.interaction)
    answer = ideal_output(fb) or (fb.interaction.response if fb.interaction is not None else "")
    return f"{question}\n{answer}"


def ideal_output(fb: Feedback) -> str:
    if fb.correction.strip():
        return fb.correction
    if fb.implicit == "edit" and fb.implicit_text.strip():
        return fb.implicit_text
    return ""


def run_dataset_add(session: Session, ctx: ActionContext, index: int, action: DatasetAdd) -> dict[str, Any]:
    key = ctx.dedup_key(index)
    existing = session.scalar(
        select(DatasetItemRow).where(
            DatasetItemRow.project_id == ctx.project_id,
            DatasetItemRow.dataset == action.dataset,
            DatasetItemRow.dedup_key == key,
        )
    )
    if existing is not None:
        return result(index, action, EXISTING, existing.id)
    fb = ctx.feedback
    it = fb.interaction
    if it is None:
        return result(
            index, action, SKIPPED, detail="session-level feedback has no interaction to learn from"
        )
    dataset = ctx.policy_set.datasets[action.dataset]
    vector = ctx.vectors.get(index)
    before = ctx.nearest.get(index)
    if before is None:
        before = nearest_item(session, ctx, action, vector)
    else:
        # Only the items added since the scan outside this transaction are compared here, so
        # the write lock is not held while a large dataset is read.
        current = set(
            session.scalars(
                select(DatasetItemRow.id).where(
                    DatasetItemRow.project_id == ctx.project_id, DatasetItemRow.dataset == action.dataset
                )
            )
        )
        added = current - before.compared
        if added:
            since = nearest_item(session, ctx, action, vector, among=added)
            if since.score > before.score:
                before = since
    match_id, score = before.item_id, before.score
    if match_id and score >= dataset.dedup_similarity:
        return result(
            index,
            action,
            SKIPPED,
            match_id,
            f"near-duplicate of {match_id} (similarity {score:.3f} >= {dataset.dedup_similarity:g})",
        )
    metadata = {
        "prompt_name": it.prompt_name,
        "prompt_version": it.prompt_version,
        "model_name": it.model_name,
        "model_version": it.model_version,
        "application": it.application,
        "categories": ",".join(fb.category_names),
        "thumb": fb.thumb,
        "session_id": fb.session_id,
        "interaction_id": it.id,
    }
    item = DatasetItemRow(
        id=new_id("di"),
        project_id=ctx.project_id,
        dataset=action.dataset,
        dedup_key=key,
        policy=ctx.policy.name,
        revision=ctx.revision,
        input_messages=list(it.input_messages or []),
        output=it.response,
        ideal_output=ideal_output(fb),
        item_metadata={k: v for k, v in metadata.items() if v},
        source_feedback_ids=list(ctx.evidence),
        vector=vector,
        created_at=utcnow(),
    )
    session.add(item)
    return result(index, action, CREATED, item.id)


def nearest_item(
    session: Session,
    ctx: ActionContext,
    action: DatasetAdd,
    vector: list[float] | None,
    among: set[str] | None = None,
) -> NearestItem:
    """The dataset item most similar to what `ctx.feedback` would add (all items, or `among`)."""
    query = select(
        DatasetItemRow.id,
        DatasetItemRow.vector,
        DatasetItemRow.input_messages,
        DatasetItemRow.ideal_output,
        DatasetItemRow.output,
    ).where(DatasetItemRow.project_id == ctx.project_id, DatasetItemRow.dataset == action.dataset)
    if among is None:
        rows = list(session.execute(query).all())
    else:
        rows = []
        for chunk in chunks(sorted(among)):
            rows += session.execute(query.where(DatasetItemRow.id.in_(chunk))).all()
    candidates = [
        (row.id, row.vector, _item_text(row.input_messages, row.ideal_output or row.output)) for row in rows
    ]
    match_id, score = best_match(vector, dataset_text(ctx.feedback), candidates)
    return NearestItem(match_id, score, frozenset(row.id for row in rows))


def _item_text(messages: list[Any], answer: str) -> str:
    return f"{last_user_text(messages or [])}\n{answer}"


ISSUE_KEY_PREFIX = "issue:"
FIRED_KEY_PREFIX = "fired:"


def review_key(policy: RoutingPolicy, feedback_id: str, group_key: str, issue_group_id: str) -> str:
    """What makes two review items the same, per queue.

    A per-event policy: the feedback. An aggregate policy fires again and again for one complaint
    (every similar feedback past `min_count`): its item is the complaint's, so that all those
    firings land on one item, and another complaint under the same `group_by` values gets its
    own. The complaint is the lasting TopIssues group of the feedback when there is one
    (`issue:<group id>:<policy>:<group key>`). Without one, the item is named after the feedback
    whose firing opened it (`fired:<feedback id>:<policy>:<group key>`), and later firings find
    it through their evidence (`_same_complaint`).
    """
    if policy.aggregate is None:
        return f"fb:{feedback_id}"
    if issue_group_id:
        return f"{ISSUE_KEY_PREFIX}{issue_group_id}:{policy.name}:{group_key}"
    return f"{FIRED_KEY_PREFIX}{feedback_id}:{policy.name}:{group_key}"


def issue_group_of(review_dedup_key: str) -> str:
    """The lasting issue group a review item is about ("" for none): read from its key."""
    if not review_dedup_key.startswith(ISSUE_KEY_PREFIX):
        return ""
    return review_dedup_key[len(ISSUE_KEY_PREFIX) :].partition(":")[0]


def _same_complaint(session: Session, ctx: ActionContext, queue: str) -> ReviewItemRow | None:
    """The item an earlier firing of this policy put in `queue` for feedback in this evidence.

    The evidence is the feedback similar to this one in the aggregate's window, so a firing for
    one of them was about the same complaint, even where one of the two had no lasting group
    (it came before the first TopIssues call, or its feedback is far from every stored group).
    Read through the evidence's decision records (indexed by feedback): the cost is bounded by
    the evidence, not by the queue's history. An item tied to another lasting group than this
    firing's is a different complaint.
    """
    others = [fid for fid in ctx.evidence if fid != ctx.feedback.id]
    item_ids: list[str] = []
    for chunk in chunks(others):
        for decided in session.scalars(
            select(DecisionRecord.actions).where(
                DecisionRecord.project_id == ctx.project_id,
                DecisionRecord.feedback_id.in_(chunk),
                DecisionRecord.policy == ctx.policy.name,
                DecisionRecord.group_key == ctx.group_key,
                DecisionRecord.outcome == Outcome.MATCHED.value,
            )
        ):
            item_ids += [
                r["resource_id"]
                for r in decided or []
                if r.get("type") == HumanReview.type and r.get("target") == queue and r.get("resource_id")
            ]
    if not item_ids:
        return None
    rows = session.scalars(
        select(ReviewItemRow)
        .where(ReviewItemRow.project_id == ctx.project_id, ReviewItemRow.id.in_(sorted(set(item_ids))))
        .order_by(ReviewItemRow.created_at, ReviewItemRow.id)
    )
    for row in rows:
        tied = issue_group_of(row.dedup_key)
        if not (ctx.issue_group_id and tied and tied != ctx.issue_group_id):
            return row
    return None


def run_human_review(session: Session, ctx: ActionContext, index: int, action: HumanReview) -> dict[str, Any]:
    queue = ctx.policy_set.review_queues[action.queue]
    # Keyed per queue on the feedback or the complaint alone: a queue never holds the same twice.
    key = review_key(ctx.policy, ctx.feedback.id, ctx.group_key, ctx.issue_group_id)
    existing = session.scalar(
        select(ReviewItemRow).where(
            ReviewItemRow.project_id == ctx.project_id,
            ReviewItemRow.queue == action.queue,
            ReviewItemRow.dedup_key == key,
        )
    )
    if existing is None and ctx.policy.aggregate is not None:
        existing = _same_complaint(session, ctx, action.queue)
        if existing is None and ctx.same_group_items:
            existing = session.scalar(
                select(ReviewItemRow)
                .where(
                    ReviewItemRow.project_id == ctx.project_id,
                    ReviewItemRow.queue == action.queue,
                    ReviewItemRow.id.in_(ctx.same_group_items),
                    ReviewItemRow.dedup_key.startswith(FIRED_KEY_PREFIX),
                )
                .order_by(ReviewItemRow.created_at, ReviewItemRow.id)
                .limit(1)
            )
        if existing is not None and ctx.issue_group_id and not issue_group_of(existing.dedup_key):
            # The complaint now has a lasting group: the item takes it, so later firings find it
            # by key and the console can open the group.
            existing.dedup_key = key
            session.flush()
    if existing is not None:
        return result(index, action, EXISTING, existing.id, "the queue already holds this feedback/group")
    due_seconds = parse_positive_duration(action.due) if action.due else queue.sla_seconds
    item = ReviewItemRow(
        id=new_id("ri"),
        project_id=ctx.project_id,
        queue=action.queue,
        dedup_key=key,
        policy=ctx.policy.name,
        revision=ctx.revision,
        feedback_id=ctx.feedback.id,
        group_key=ctx.group_key,
        evidence=list(ctx.evidence),
        priority=action.priority,
        due_at=ctx.now + timedelta(seconds=due_seconds),
        status="open",
        reviews_required=queue.reviews_required,
        reviews_done=0,
        lease_seconds=int(queue.lease_seconds),
        created_at=utcnow(),
    )
    session.add(item)
    return result(index, action, CREATED, item.id)


def run_action(session: Session, ctx: ActionContext, index: int, action: Any) -> dict[str, Any]:
    with session.begin_nested():
        if isinstance(action, PromptPatch):
            return run_prompt_patch(session, ctx, index, action)
        if isinstance(action, DatasetAdd):
            return run_dataset_add(session, ctx, index, action)
        if isinstance(action, HumanReview):
            return run_human_review(session, ctx, index, action)
    raise ValueError(f"unknown action {action!r}")
