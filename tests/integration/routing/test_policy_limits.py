"""Policy validation over gRPC is bounded: the worst accepted condition leaves the server
answering, over-budget conditions and hostile YAML are refused quickly with file:line:col,
and validating or planning needs the policy scope."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from routing_support import Harness, policy_files

from feedbackloop import auth
from feedbackloop.policy.cost import EXPRESSION_COST_LIMIT, estimate_cost
from feedbackloop.store import keys
from feedbackloop.store.db import Database
from feedbackloop.v1 import routing_pb2
from support import bearer, code_of

QUEUE = "apiVersion: feedbackloop/v1\nkind: ReviewQueue\nmetadata: {name: q}\nspec: {sla: 1h}\n"


def ints(n: int) -> str:
    return "[" + ",".join(str(i) for i in range(n)) + "]"


# The slowest condition the limits accept (bench/policy_limits_bench.py measures each kind):
# about 3 ms per evaluation on the development machine.
WORST = f"{ints(312)}.map(x, x * 2).size() > 0"
CUBIC = f"{ints(300)}.all(x, {ints(300)}.all(y, {ints(300)}.all(z, x + y + z >= 0)))"


def routing(condition: str) -> list[routing_pb2.PolicyFile]:
    policy = (
        "apiVersion: feedbackloop/v1\nkind: RoutingPolicy\nmetadata: {name: r}\nspec:\n"
        f"  when: '{condition}'\n  actions: [{{human_review: {{queue: q}}}}]\n"
    )
    return policy_files(queue=QUEUE, routing=policy)


def test_health_checks_are_answered_while_the_worst_accepted_condition_is_validated(h: Harness) -> None:
    assert 0.9 * EXPRESSION_COST_LIMIT < estimate_cost(WORST) <= EXPRESSION_COST_LIMIT
    files = routing(WORST)
    stop = threading.Event()
    results: list[bool] = []

    def validate() -> None:
        while not stop.is_set():
            response = h.routing.ValidatePolicies(routing_pb2.ValidatePoliciesRequest(files=files))
            results.append(response.valid)

    workers = [threading.Thread(target=validate) for _ in range(2)]
    for worker in workers:
        worker.start()
    health = health_pb2_grpc.HealthStub(h.channel)
    latencies = []
    try:
        for _ in range(40):
            started = time.perf_counter()
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            latencies.append(time.perf_counter() - started)
            assert status == health_pb2.HealthCheckResponse.SERVING
            time.sleep(0.01)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert results and all(results)
    # A generous bound (the p99 figure is bench/policy_limits_bench.py's): before the cost
    # limits, one validation froze the server for seconds.
    assert max(latencies) < 1.0, latencies


def test_an_over_budget_condition_is_refused_quickly_with_its_position(h: Harness) -> None:
    files = routing(CUBIC)
    started = time.perf_counter()
    response = h.routing.ValidatePolicies(routing_pb2.ValidatePoliciesRequest(files=files))
    assert time.perf_counter() - started < 2.0  # it took 10.4 s when it was evaluated
    assert not response.valid
    assert [p.text for p in response.problems] == [
        "routing.yaml:5:9: spec.when: estimated cost 405,361,201 exceeds the per-expression limit of "
        "100,000 (comprehensions multiply by the sizes they iterate; event fields count at their "
        "ingestion maxima)"
    ]
    code, message = code_of(lambda: h.routing.PlanPolicies(routing_pb2.PlanPoliciesRequest(files=files)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "routing.yaml:5:9" in message and "estimated cost 405,361,201" in message


def test_hostile_yaml_is_invalid_argument_never_internal(h: Harness) -> None:
    cases = {
        "deep": ("a: " + "[" * 2000 + "]" * 2000 + "\n", "deep.yaml:1:35: YAML nests deeper than 32 levels"),
        "bomb": (
            'a: &a ["lol","lol"]\nb: &b [*a,*a]\nc: [*b,*b]\n',
            "bomb.yaml:2:8: YAML aliases (*a) are not allowed in policy files; write the value out",
        ),
        "big": (
            QUEUE + "#" * (1024 * 1024) + "\n",
            "big.yaml:1:1: file is 1,048,659 bytes; the limit for a policy file is 1,048,576",
        ),
    }
    for name, (text, expected) in cases.items():
        files = [routing_pb2.PolicyFile(path=f"{name}.yaml", content=text)]
        response = h.routing.ValidatePolicies(routing_pb2.ValidatePoliciesRequest(files=files))
        assert [p.text for p in response.problems] == [expected]
        code, message = code_of(
            lambda f=files: h.routing.PlanPolicies(routing_pb2.PlanPoliciesRequest(files=f))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, message)
        assert expected.split(": ", 1)[1] in message


def test_validate_and_plan_need_the_policy_scope(
    make_harness: Callable[..., Harness], store_url: str
) -> None:
    db = Database(store_url)
    db.upgrade()
    keys.ensure_project(db, "default")
    made = {
        scope: keys.create_key(db, "default", frozenset({scope}))
        for scope in (auth.Scope.READ, auth.Scope.INGEST, auth.Scope.POLICY, auth.Scope.ADMIN)
    }
    db.dispose()
    h = make_harness(allow_anonymous_loopback=False)
    files = routing("true")

    def calls(key: str) -> list[grpc.StatusCode | None]:
        out: list[grpc.StatusCode | None] = []
        for call in (
            lambda: h.routing.ValidatePolicies(
                routing_pb2.ValidatePoliciesRequest(files=files), metadata=bearer(key)
            ),
            lambda: h.routing.PlanPolicies(
                routing_pb2.PlanPoliciesRequest(files=files), metadata=bearer(key)
            ),
        ):
            try:
                call()
                out.append(None)
            except grpc.RpcError as error:
                out.append(error.code())
        return out

    denied = [grpc.StatusCode.PERMISSION_DENIED] * 2
    assert calls(made[auth.Scope.READ]) == denied
    assert calls(made[auth.Scope.INGEST]) == denied
    assert calls(made[auth.Scope.POLICY]) == [None, None]
    assert calls(made[auth.Scope.ADMIN]) == [None, None]
    # The policy scope validates and plans; applying stays with admin.
    code, _ = code_of(
        lambda: h.routing.ApplyPolicies(
            routing_pb2.ApplyPoliciesRequest(files=files), metadata=bearer(made[auth.Scope.POLICY])
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


# Accepted with a wide margin: the estimate counts `feedback.categories` at ingestion's 16.
NESTED_OVER_CATEGORIES = 'feedback.categories.exists(a, feedback.categories.exists(b, a == b + "x"))'


def test_evaluate_refuses_an_inline_event_larger_than_the_estimate_assumes(h: Harness) -> None:
    """With 2,000 inline categories this accepted condition held the GIL for 2.6 s, and a few
    megabytes of them for hours: an inline event is held to the sizes ingestion stores."""
    assert estimate_cost(NESTED_OVER_CATEGORIES) < EXPRESSION_COST_LIMIT // 10
    h.apply(routing(NESTED_OVER_CATEGORIES))

    def evaluate(event: dict[str, object]) -> routing_pb2.EvaluateResponse:
        return h.routing.Evaluate(routing_pb2.EvaluateRequest(event=event))

    categories = [f"c{i}" for i in range(2000)]
    code, details = code_of(lambda: evaluate({"feedback": {"categories": categories}}))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "event.feedback.categories: has 2000 entries; the limit is 16",
    )
    code, details = code_of(
        lambda: evaluate(
            {
                "feedback": {"comment": "x" * 32_001, "attributes": {"k": ["a", "b"]}},
                "interaction": {"input_messages": [{"role": "user", "content": "hi", "extra": "x"}]},
            }
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == (
        "event.feedback.comment: is 32001 characters long; the limit is 32000; "
        "event.feedback.attributes['k']: must be a string; "
        "event.interaction.input_messages[0]: has a field that events do not have ('extra')"
    )
    # Within ingestion's sizes the same condition evaluates as before.
    (decision,) = evaluate({"feedback": {"categories": categories[:16]}}).decisions
    assert decision.outcome == routing_pb2.DECISION_OUTCOME_CONDITION_FALSE
