"""Apply/plan/rollback semantics, bad policy sets, concurrency, scopes, prompt patches, aggregates."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import pytest
from routing_support import Harness, policy_files

from feedbackloop import auth
from feedbackloop.store import keys
from feedbackloop.store.db import Database
from feedbackloop.v1 import (
    common_pb2,
    datasets_pb2,
    patch_generator_pb2,
    patch_generator_pb2_grpc,
    prompts_pb2,
    reviews_pb2,
    routing_pb2,
)
from support import bearer, code_of, pages_of

HEAD = "apiVersion: feedbackloop/v1\n"
QUEUE = HEAD + "kind: ReviewQueue\nmetadata:\n  name: q\nspec:\n  sla: 24h\n"
PROMPT = HEAD + (
    "kind: Prompt\nmetadata:\n  name: support-answer\nspec:\n  variables: [product]\n"
    "  template: 'You help with {{product}}.'\n"
)
DOWN_TO_Q = HEAD + (
    'kind: RoutingPolicy\nmetadata:\n  name: down\nspec:\n  when: feedback.thumb == "down"\n'
    "  actions:\n    - human_review: {queue: q, priority: 70}\n"
)


def patch_policy(strategy: str, approval: str, extra: str = "") -> str:
    body = (
        "template: 'Do not say: {{comment}}'"
        if strategy != "generator"
        else f"generator: {{target: '{extra}'}}"
    )
    return HEAD + (
        'kind: RoutingPolicy\nmetadata:\n  name: patcher\nspec:\n  when: feedback.comment != ""\n'
        f"  actions:\n    - prompt_patch: {{prompt: support-answer, strategy: {strategy}, approval: {approval}, {body}}}\n"
    )


BAD = {
    "yaml_syntax": (
        "routing.yaml",
        "apiVersion: feedbackloop/v1\nkind: [unclosed\n",
        "routing.yaml:3:1: YAML syntax error",
    ),
    "unknown_kind": (
        "routing.yaml",
        HEAD + "kind: Alarm\nmetadata: {name: x}\nspec: {}\n",
        "routing.yaml:2:7: kind",
    ),
    "unknown_field": (
        "routing.yaml",
        DOWN_TO_Q.replace("  when:", "  whenn: x\n  when:"),
        "routing.yaml:6:3: spec",
    ),
    "cel_error": (
        "routing.yaml",
        DOWN_TO_Q.replace('feedback.thumb == "down"', "feedback.thumb =="),
        "routing.yaml:6:9: spec.when",
    ),
    "missing_reference": (
        "routing.yaml",
        DOWN_TO_Q.replace("queue: q", "queue: nope"),
        'unknown ReviewQueue "nope"',
    ),
    "negative_window": (
        "routing.yaml",
        DOWN_TO_Q.replace("  actions:", "  cooldown: -5m\n  actions:"),
        "spec.cooldown",
    ),
    "duplicate_names": ("routing.yaml", DOWN_TO_Q + "---\n" + DOWN_TO_Q, 'duplicate RoutingPolicy "down"'),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_policy_sets_leave_the_live_revision_unchanged(h: Harness, case: str) -> None:
    h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q))
    _path, text, expected = BAD[case]
    files = policy_files(queue=QUEUE, routing=text)
    code, details = code_of(lambda: h.apply(files, expected_revision=1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in details
    assert h.live_revision() == 1
    validated = h.routing.ValidatePolicies(routing_pb2.ValidatePoliciesRequest(files=files))
    assert not validated.valid and any(expected in p.text for p in validated.problems)
    # The live set still routes.
    i = h.interaction()
    h.feedback(i, thumb=common_pb2.THUMB_DOWN)
    h.route_pending()
    assert h.counts()["review_items"] == 1


def test_stale_plan_and_concurrent_applies_are_aborted(h: Harness) -> None:
    plan = h.routing.PlanPolicies(routing_pb2.PlanPoliciesRequest(files=policy_files(queue=QUEUE)))
    assert plan.base_revision == 0 and plan.has_changes
    h.apply(policy_files(queue=QUEUE), expected_revision=plan.base_revision)
    code, details = code_of(
        lambda: h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q), expected_revision=0)
    )
    assert code == grpc.StatusCode.ABORTED and "the live policy revision is 1, not 0" in details

    barrier = threading.Barrier(2)
    variants = [QUEUE.replace("24h", "1h"), QUEUE.replace("24h", "2h")]

    def apply(text: str) -> Any:
        barrier.wait()
        try:
            return h.apply(policy_files(queue=text), expected_revision=1)
        except grpc.RpcError as error:
            return error

    with futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(apply, variants))
    won = [r for r in results if isinstance(r, routing_pb2.ApplyPoliciesResponse)]
    lost = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(won) == 1 and len(lost) == 1
    assert lost[0].code() == grpc.StatusCode.ABORTED and "run plan again" in lost[0].details()
    assert h.live_revision() == 2


def test_plan_text_is_exact_for_a_small_change(h: Harness) -> None:
    h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q))
    i = h.interaction()
    fid = h.feedback(i, thumb=common_pb2.THUMB_DOWN)
    changed = policy_files(
        queue=QUEUE.replace("24h", "4h"), routing=DOWN_TO_Q.replace("priority: 70", "priority: 80")
    )
    plan = h.routing.PlanPolicies(routing_pb2.PlanPoliciesRequest(files=changed))
    assert plan.base_revision == 1
    assert plan.plan_text == (
        "Resource actions are indicated with the following symbols:\n"
        "  ~ update in-place\n"
        "\n"
        "feedbackloop will perform the following actions:\n"
        "\n"
        "  # ReviewQueue/q will be updated in-place\n"
        "  ~ ReviewQueue/q\n"
        '      ~ spec.sla: "24h" -> "4h"\n'
        "\n"
        "  # RoutingPolicy/down will be updated in-place\n"
        "  ~ RoutingPolicy/down\n"
        "      ~ spec.actions[0].human_review.priority: 70 -> 80\n"
        "\n"
        "Plan: 0 to add, 2 to change, 0 to destroy.\n"
        "\n"
        "Backtest over 1 feedback event(s) of the last 7 day(s):\n"
        "  down: 1 matched\n"
        f"    actions[0] human_review q: would create 1 review item(s) (e.g. {fid})\n"
    )
    assert plan.backtest.policies[0].actions[0].count == 1
    assert h.counts()["review_items"] == 0  # a plan does nothing
    applied = h.apply(changed, expected_revision=plan.base_revision, backfill_window={"seconds": 3600})
    assert applied.revision.revision == 2 and applied.backfill.actions_created == 1
    assert h.review_items()[0].priority == 80


def test_history_show_and_rollback(h: Harness) -> None:
    first = h.apply(policy_files(queue=QUEUE)).revision
    h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q))
    assert h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q)).changed is False
    rolled = h.routing.Rollback(routing_pb2.RollbackRequest(revision=1)).revision
    assert rolled.revision == 3 and rolled.content_hash == first.content_hash
    assert rolled.kind == routing_pb2.REVISION_KIND_ROLLBACK and rolled.source_revision == 1
    history = h.routing.ListRevisions(routing_pb2.ListRevisionsRequest())
    assert [r.revision for r in history.revisions] == [3, 2, 1] and history.live_revision == 3
    shown = h.routing.GetRevision(routing_pb2.GetRevisionRequest(revision=2))
    assert "RoutingPolicy" in shown.yaml and shown.revision.applied_by == "anonymous"
    # The engine switched without a restart: revision 3 has no routing policy.
    i = h.interaction()
    h.feedback(i, thumb=common_pb2.THUMB_DOWN)
    h.route_pending()
    assert h.counts()["review_items"] == 0
    code, _ = code_of(lambda: h.routing.GetRevision(routing_pb2.GetRevisionRequest(revision=9)))
    assert code == grpc.StatusCode.NOT_FOUND


def test_scopes(make_harness, store_url: str) -> None:
    db = Database(store_url)
    db.upgrade()
    keys.ensure_project(db, "default")
    admin = keys.create_key(db, "default", frozenset({auth.Scope.ADMIN}))
    ingest = keys.create_key(db, "default", frozenset({auth.Scope.INGEST}))
    read = keys.create_key(db, "default", frozenset({auth.Scope.READ}))
    review = keys.create_key(db, "default", frozenset({auth.Scope.REVIEW}))
    db.dispose()
    h = make_harness(allow_anonymous_loopback=False)

    files = policy_files(queue=QUEUE)
    for key in (ingest, read):
        code, _ = code_of(
            lambda k=key: h.routing.ApplyPolicies(
                routing_pb2.ApplyPoliciesRequest(files=files), metadata=bearer(k)
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = code_of(
            lambda k=key: h.routing.Rollback(routing_pb2.RollbackRequest(revision=1), metadata=bearer(k))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = code_of(
            lambda k=key: h.prompts.ApprovePatch(
                prompts_pb2.ApprovePatchRequest(patch_id="pp_x"), metadata=bearer(k)
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
    applied = h.routing.ApplyPolicies(routing_pb2.ApplyPoliciesRequest(files=files), metadata=bearer(admin))
    assert applied.revision.applied_by == admin.split("_")[1]
    # Planning needs the policy scope (test_policy_limits.py); admin implies it.
    h.routing.PlanPolicies(routing_pb2.PlanPoliciesRequest(files=files), metadata=bearer(admin))
    # Reviewers claim with a review key; neither an ingest nor a read key can.
    h.reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue="q"), metadata=bearer(review))
    for key in (ingest, read):
        code, _ = code_of(
            lambda k=key: h.reviews.ClaimReviewItem(
                reviews_pb2.ClaimReviewItemRequest(queue="q"), metadata=bearer(k)
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_prompt_patches_approve_reject_rollback(h: Harness) -> None:
    h.apply(policy_files(prompt=PROMPT, routing=patch_policy("append_guideline", "required")))
    v1 = h.prompts.GetPrompt(prompts_pb2.GetPromptRequest(name="support-answer")).prompt
    assert (v1.version, v1.template, v1.origin) == (1, "You help with {{product}}.", "policy")
    i = h.interaction()
    fid = h.feedback(i, comment="prices from 2022")
    fid2 = h.feedback(i, comment="wrong tone")
    h.route_pending()
    patches = h.prompts.ListPatches(prompts_pb2.ListPatchesRequest(prompt="support-answer")).patches
    assert sorted((p.content, list(p.evidence_feedback_ids)) for p in patches) == [
        ("Do not say: prices from 2022", [fid]),
        ("Do not say: wrong tone", [fid2]),
    ]
    assert {p.status for p in patches} == {prompts_pb2.PATCH_STATUS_PROPOSED}
    assert h.prompts.GetPrompt(prompts_pb2.GetPromptRequest(name="support-answer")).prompt.version == 1
    first = next(p for p in patches if p.evidence_feedback_ids[0] == fid)
    approved = h.prompts.ApprovePatch(prompts_pb2.ApprovePatchRequest(patch_id=first.id))
    assert approved.prompt.version == 2 and approved.prompt.production
    assert approved.prompt.template == "You help with {{product}}.\n\nDo not say: prices from 2022\n"
    other = next(p for p in patches if p.id != first.id)
    rejected = h.prompts.RejectPatch(prompts_pb2.RejectPatchRequest(patch_id=other.id, reason="noise"))
    assert rejected.patch.status == prompts_pb2.PATCH_STATUS_REJECTED
    code, _ = code_of(lambda: h.prompts.ApprovePatch(prompts_pb2.ApprovePatchRequest(patch_id=other.id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    back = h.prompts.RollbackPrompt(prompts_pb2.RollbackPromptRequest(name="support-answer"))
    assert back.prompt.version == 1 and list(back.rolled_back_patch_ids) == [first.id]
    assert h.prompts.GetPrompt(prompts_pb2.GetPromptRequest(name="support-answer")).prompt.version == 1
    latest = h.prompts.GetPrompt(prompts_pb2.GetPromptRequest(name="support-answer", label="latest")).prompt
    assert latest.version == 2 and not latest.production


def test_a_prompt_the_applied_set_drops_is_no_longer_served_until_defined_again(h: Harness) -> None:
    first = h.apply(policy_files(prompt=PROMPT, routing=patch_policy("append_guideline", "required")))
    i = h.interaction()
    h.feedback(i, comment="prices from 2022")
    h.route_pending()
    proposed = h.prompts.ListPatches(prompts_pb2.ListPatchesRequest()).patches[0]
    dropped = h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q)).revision.revision
    get = prompts_pb2.GetPromptRequest(name="support-answer")
    code, message = code_of(lambda: h.prompts.GetPrompt(get))
    assert code == grpc.StatusCode.NOT_FOUND
    assert f'name: prompt "support-answer" was removed by policy revision {dropped}' in message
    for call in (
        lambda: h.prompts.GetPrompt(prompts_pb2.GetPromptRequest(name="support-answer", label="1")),
        lambda: h.prompts.ApprovePatch(prompts_pb2.ApprovePatchRequest(patch_id=proposed.id)),
        lambda: h.prompts.RollbackPrompt(prompts_pb2.RollbackPromptRequest(name="support-answer", version=1)),
    ):
        assert code_of(call)[0] == grpc.StatusCode.NOT_FOUND
    # Refused calls changed nothing: the patch is still proposed, its history still listed.
    assert h.prompts.ListPatches(prompts_pb2.ListPatchesRequest()).patches[0].status == proposed.status
    h.routing.Rollback(routing_pb2.RollbackRequest(revision=first.revision.revision))
    served = h.prompts.GetPrompt(get).prompt
    assert (served.version, served.template) == (1, "You help with {{product}}.")
    approved = h.prompts.ApprovePatch(prompts_pb2.ApprovePatchRequest(patch_id=proposed.id))
    assert approved.prompt.version == 2


class _Generator(patch_generator_pb2_grpc.PatchGeneratorServiceServicer):
    def __init__(self) -> None:
        self.requests: list[patch_generator_pb2.GeneratePatchRequest] = []

    def GeneratePatch(self, request: Any, context: Any) -> patch_generator_pb2.GeneratePatchResponse:
        self.requests.append(request)
        comments = "; ".join(e.feedback.comment for e in request.evidence)
        return patch_generator_pb2.GeneratePatchResponse(
            template=request.template + f"\nAvoid: {comments}", rationale="from feedback"
        )


def test_generator_strategy_with_auto_approval(h: Harness) -> None:
    generator = _Generator()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    patch_generator_pb2_grpc.add_PatchGeneratorServiceServicer_to_server(generator, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        h.apply(policy_files(prompt=PROMPT, routing=patch_policy("generator", "auto", f"127.0.0.1:{port}")))
        i = h.interaction(question="hello?")
        h.feedback(i, comment="too vague")
        assert all(e is None for e in h.route_pending().values())
        assert len(generator.requests) == 1
        sent = generator.requests[0]
        assert (sent.prompt_name, sent.prompt_version, sent.policy) == ("support-answer", 1, "patcher")
        assert sent.evidence[0].interaction.input_messages[1].content == "hello?"
        prod = h.prompts.GetPrompt(prompts_pb2.GetPromptRequest(name="support-answer")).prompt
        assert prod.version == 2 and prod.template == "You help with {{product}}.\nAvoid: too vague"
        patch = h.prompts.ListPatches(prompts_pb2.ListPatchesRequest()).patches[0]
        assert patch.status == prompts_pb2.PATCH_STATUS_APPLIED and patch.note == "from feedback"
    finally:
        server.stop(0)


DATASET = HEAD + "kind: Dataset\nmetadata:\n  name: ds\nspec:\n  formats: [plain]\n  dedup_similarity: 0.9\n"
TO_DATASET = HEAD + (
    'kind: RoutingPolicy\nmetadata:\n  name: to-ds\nspec:\n  when: feedback.correction != ""\n'
    "  actions:\n    - dataset_add: {dataset: ds}\n"
)


def test_dataset_add_skips_near_duplicates_including_items_added_meanwhile(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.apply(policy_files(dataset=DATASET, routing=TO_DATASET))

    def correct(session: str, question: str, correction: str) -> str:
        return h.feedback(h.interaction(session, question=question), session=session, correction=correction)

    def statuses(feedback_id: str) -> list[tuple[int, str]]:
        explained = h.routing.Explain(routing_pb2.ExplainRequest(feedback_id=feedback_id))
        return [(a.status, a.detail.split(" (")[0]) for r in explained.records for a in r.decision.actions]

    first = correct("s1", "How much is the pro plan?", "The Pro plan costs $15 a month.")
    again = correct("s2", "How much is the pro plan?", "The Pro plan costs $15 a month.")
    h.route_pending()
    assert h.counts()["dataset_items"] == 1
    item_id = h.datasets.ListItems(datasets_pb2.ListItemsRequest(dataset="ds")).items[0].id
    assert statuses(first) == [(routing_pb2.ACTION_STATUS_CREATED, "")]
    assert statuses(again) == [(routing_pb2.ACTION_STATUS_SKIPPED, f"near-duplicate of {item_id}")]

    # The dataset is scanned before the write transaction; an item that another route adds in
    # between must still count. Route `meanwhile` to completion right after `late`'s scan.
    late = correct("s3", "How long do refunds take?", "Refunds take five business days.")
    meanwhile = correct("s4", "How long do refunds take?", "Refunds take five business days.")
    router = h.component.router
    scan = router._precompute

    def scan_then_race(ctx: Any, decision: Any) -> None:
        scan(ctx, decision)
        if ctx.feedback.id == late:
            router.route(ctx.project_id, meanwhile)

    monkeypatch.setattr(router, "_precompute", scan_then_race)
    h.route_pending()
    assert h.counts()["dataset_items"] == 2
    assert statuses(meanwhile) == [(routing_pb2.ACTION_STATUS_CREATED, "")]
    raced = [s for s, _ in statuses(late)]
    assert raced == [routing_pb2.ACTION_STATUS_SKIPPED]


AGGREGATE = HEAD + (
    "kind: RoutingPolicy\nmetadata:\n  name: many-outdated\nspec:\n"
    "  when: '\"outdated_info\" in feedback.categories'\n"
    "  aggregate: {min_count: 3, window: 24h, min_similarity: 0.5, group_by: [interaction.prompt_name]}\n"
    "  actions:\n    - human_review: {queue: q}\n"
)


def test_aggregate_enqueues_one_item_per_group(h: Harness) -> None:
    h.apply(policy_files(queue=QUEUE, routing=AGGREGATE))
    ids = []
    for n in range(4):
        i = h.interaction(f"a{n}", prompt="support-answer")
        ids.append(h.feedback(i, f"a{n}", thumb=common_pb2.THUMB_DOWN, categories=["outdated_info"]))
        h.route_pending()
    other = h.interaction("b", prompt="other-prompt")
    h.feedback(other, "b", thumb=common_pb2.THUMB_DOWN, categories=["outdated_info"])
    h.route_pending()
    items = h.review_items()
    assert len(items) == 1
    assert items[0].group_key == "interaction.prompt_name=support-answer"
    assert items[0].feedback_id == ids[2] and sorted(items[0].evidence) == sorted(ids[:3])
    outcomes = [
        h.routing.Explain(routing_pb2.ExplainRequest(feedback_id=f)).records[0].decision.outcome for f in ids
    ]
    assert (
        outcomes
        == [routing_pb2.DECISION_OUTCOME_AGGREGATE_BELOW_THRESHOLD] * 2
        + [routing_pb2.DECISION_OUTCOME_MATCHED] * 2
    )
    fourth = h.routing.Explain(routing_pb2.ExplainRequest(feedback_id=ids[3])).records[0]
    assert fourth.decision.actions[0].status == routing_pb2.ACTION_STATUS_EXISTING


def test_evaluate_is_a_dry_run(h: Harness) -> None:
    h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q))
    response = h.routing.Evaluate(
        routing_pb2.EvaluateRequest(event={"feedback": {"id": "x", "thumb": "down", "rating": 2}})
    )
    assert [(d.policy, d.outcome) for d in response.decisions] == [
        ("down", routing_pb2.DECISION_OUTCOME_MATCHED)
    ]
    assert response.decisions[0].actions[0].status == routing_pb2.ACTION_STATUS_WOULD_RUN
    code, details = code_of(
        lambda: h.routing.Evaluate(routing_pb2.EvaluateRequest(event={"feedback": {"thumbz": "down"}}))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "thumbz" in details
    assert h.counts()["review_items"] == 0


def test_evaluate_gives_an_inline_event_its_fields_types(h: Harness) -> None:
    # Struct numbers are all doubles, and CEL arithmetic does not mix int and double: the int
    # fields (`rating`, `turn_index`, session counts) must come back ints and the doubles
    # (`model_confidence`, a context document's score) stay doubles, as in a stored event, or
    # this condition fails to evaluate.
    when = (
        "feedback.rating + 1 <= 3 && interaction.turn_index + 1 == 3 && session.turn_count + 1 == 5 && "
        "feedback.model_confidence * 2.0 < 3.0 && interaction.context_documents[0].score * 2.0 == 2.0"
    )
    h.apply(policy_files(queue=QUEUE, routing=DOWN_TO_Q.replace('feedback.thumb == "down"', when)))
    event = {
        "feedback": {"rating": 2, "model_confidence": 1.0},
        "interaction": {"turn_index": 2, "context_documents": [{"id": "d", "text": "t", "score": 1.0}]},
        "session": {"turn_count": 4},
    }
    response = h.routing.Evaluate(routing_pb2.EvaluateRequest(event=event))
    assert [(d.outcome, d.reason) for d in response.decisions] == [
        (routing_pb2.DECISION_OUTCOME_MATCHED, "condition is true")
    ]


def test_evaluate_counts_aggregates_for_an_event_that_is_not_stored(h: Harness) -> None:
    h.apply(policy_files(queue=QUEUE, routing=AGGREGATE))

    def dry_run(prompt: str, **feedback: Any) -> routing_pb2.PolicyDecision:
        event = {
            "feedback": {"thumb": "down", "categories": ["outdated_info"], **feedback},
            "interaction": {
                "prompt_name": prompt,
                "input_messages": [{"role": "user", "content": "How much is the pro plan?"}],
            },
        }
        return h.routing.Evaluate(routing_pb2.EvaluateRequest(event=event)).decisions[0]

    below = routing_pb2.DECISION_OUTCOME_AGGREGATE_BELOW_THRESHOLD
    assert dry_run("support-answer").outcome == below
    stored = []
    for n in range(2):
        i = h.interaction(f"a{n}", prompt="support-answer")
        stored.append(h.feedback(i, f"a{n}", thumb=common_pb2.THUMB_DOWN, categories=["outdated_info"]))
        h.route_pending()
    # Two stored neighbours and the event itself reach min_count 3; nothing is stored or enqueued.
    matched = dry_run("support-answer")
    assert matched.outcome == routing_pb2.DECISION_OUTCOME_MATCHED, matched.reason
    # An inline copy of a stored feedback (same id, as Evaluate echoes it) is that feedback: it
    # counts once, as itself, not again as its own neighbour.
    copy = dry_run("support-answer", id=stored[0])
    assert (copy.outcome, copy.reason.split(" similar")[0]) == (below, "2")
    assert dry_run("other-prompt").outcome == below  # another group counts only itself
    assert dry_run("support-answer", occurred_at="2000-01-01T00:00:00Z").outcome == below  # window
    assert h.counts()["review_items"] == 0
    code, details = code_of(lambda: dry_run("support-answer", occurred_at="yesterday"))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "event: feedback.occurred_at: 'yesterday' is not an ISO 8601 time",
    )


def test_routing_lists_page_with_tokens(h: Harness) -> None:
    for sla in ("1h", "2h", "3h", "4h", "5h"):
        h.apply(policy_files(queue=QUEUE.replace("24h", sla), routing=DOWN_TO_Q))
    revision_pages = pages_of(
        lambda token: h.routing.ListRevisions(
            routing_pb2.ListRevisionsRequest(page_size=2, page_token=token)
        ),
        "revisions",
    )
    assert [[r.revision for r in p] for p in revision_pages] == [[5, 4], [3, 2], [1]]
    second = h.routing.ListRevisions(
        routing_pb2.ListRevisionsRequest(
            page_size=2,
            page_token=h.routing.ListRevisions(routing_pb2.ListRevisionsRequest(page_size=2)).next_page_token,
        )
    )
    assert second.live_revision == 5  # the live revision, not the first row of the page

    h.apply(
        policy_files(
            queue=QUEUE,
            routing=DOWN_TO_Q,
            prompt=PROMPT,
            patcher=patch_policy("append_guideline", "required"),
        )
    )
    i = h.interaction()
    for n in range(5):
        h.feedback(i, thumb=common_pb2.THUMB_DOWN)  # a review item each
        h.feedback(i, comment=f"complaint {n}")  # a proposed patch each
    h.route_pending()
    patch_pages = pages_of(
        lambda token: h.prompts.ListPatches(prompts_pb2.ListPatchesRequest(page_size=2, page_token=token)),
        "patches",
    )
    everything = h.prompts.ListPatches(prompts_pb2.ListPatchesRequest()).patches
    assert [len(p) for p in patch_pages] == [2, 2, 1]
    assert [p.id for page in patch_pages for p in page] == [p.id for p in everything]

    listing = h.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(queue="q")).items
    first = h.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(queue="q", page_size=2))
    assert [x.id for x in first.items] == [x.id for x in listing[:2]]
    # An item of the first page leaves the open list before the next page is read: a keyset
    # page goes on after the last row seen, where an offset would skip an item.
    claim = h.reviews.ClaimReviewItem(reviews_pb2.ClaimReviewItemRequest(queue="q"))
    assert claim.item.id == listing[0].id
    h.reviews.ResolveReviewItem(
        reviews_pb2.ResolveReviewItemRequest(
            claim_id=claim.claim_id, verdict=reviews_pb2.REVIEW_VERDICT_ACCEPT
        )
    )
    rest = pages_of(
        lambda token: h.reviews.ListReviewItems(
            reviews_pb2.ListReviewItemsRequest(
                queue="q", page_size=2, page_token=token or first.next_page_token
            )
        ),
        "items",
    )
    assert [x.id for page in rest for x in page] == [x.id for x in listing[2:]]


def test_a_page_token_is_refused_when_malformed_or_replayed_with_another_filter(h: Harness) -> None:
    for sla in ("1h", "2h"):
        h.apply(policy_files(queue=QUEUE.replace("24h", sla), routing=DOWN_TO_Q))
    token = h.routing.ListRevisions(routing_pb2.ListRevisionsRequest(page_size=1)).next_page_token
    assert token
    code, message = code_of(
        lambda: h.routing.ListRevisions(routing_pb2.ListRevisionsRequest(page_size=1, page_token="x" + token))
    )
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token: is malformed; pass next_page_token unchanged",
    )
    code, message = code_of(
        lambda: h.prompts.ListPatches(
            prompts_pb2.ListPatchesRequest(prompt="support-answer", page_token=token)
        )
    )
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token: was issued for a different filter",
    )


def test_routing_lists_follow_the_page_size_settings(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(default_page_size=2, max_page_size=3)
    for sla in ("1h", "2h", "3h", "4h"):
        h.apply(policy_files(queue=QUEUE.replace("24h", sla), routing=DOWN_TO_Q))
    assert len(h.routing.ListRevisions(routing_pb2.ListRevisionsRequest()).revisions) == 2
    assert len(h.routing.ListRevisions(routing_pb2.ListRevisionsRequest(page_size=3)).revisions) == 3
    for call in (
        lambda: h.routing.ListRevisions(routing_pb2.ListRevisionsRequest(page_size=4)),
        lambda: h.prompts.ListPatches(prompts_pb2.ListPatchesRequest(page_size=4)),
        lambda: h.reviews.ListReviewItems(reviews_pb2.ListReviewItemsRequest(page_size=4)),
        lambda: h.datasets.ListItems(datasets_pb2.ListItemsRequest(dataset="d", page_size=4)),
    ):
        assert code_of(call) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size: must be between 0 and 3 (got 4)",
        )
