"""Blind review reaches an aggregate's evidence: a reviewer's verdict is feedback like any other
(indexed, routed), so an aggregate policy whose condition it meets counts it among the similar
feedback that made the policy fire. The review screen of that aggregate's item must not show it.

Over real HTTP against a real server with the real model: one reviewer's verdict, through the
console, lands in an aggregate item's evidence; the next reviewer's screen shows the end user's
similar feedback and not the verdict.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
from console_support import SAFETY_QUEUE, create_key, reviewer_key
from screens_support import Api, Browser, apply_policies, default_policy_files, text_of

from feedbackloop.v1 import common_pb2, reviews_pb2, reviews_pb2_grpc, routing_pb2

QUEUE = "outdated-review"
# Three similar "outdated" complaints in a day, whoever wrote them: the condition does not ask
# for `feedback.source == "end_user"`, which is what lets a reviewer's verdict count.
AGGREGATE = f"""apiVersion: feedbackloop/v1
kind: RoutingPolicy
metadata:
  name: outdated-to-review
spec:
  when: '"outdated_info" in feedback.categories'
  priority: 200
  continue: true
  aggregate:
    min_count: 3
    window: 24h
    min_similarity: 0.85
  actions:
    - human_review:
        queue: {QUEUE}
---
apiVersion: feedbackloop/v1
kind: ReviewQueue
metadata:
  name: {QUEUE}
spec:
  sla: 24h
  lease: 15m
"""
COMPLAINT = "The Pro plan price it quoted is outdated, that was last year's price list."
VERDICT = "The Pro plan price it quoted is outdated, that was last year's price list (confirmed in review)."

_CLAIM = re.compile(r'data-claim-id="([^"]+)"')
_EVIDENCE = re.compile(r'<section aria-labelledby="evidence-title">(.*?)</section>', re.S)
_FEEDBACK_SOURCE = re.compile(r'<div class="feedback source-(\d+)">')


def _take_next(browser: Browser, queue: str) -> str:
    """Claim the next item of `queue` through the console; the screen's HTML."""
    taken = browser.post(f"/reviews/{queue}/next")
    assert taken.status_code == 303, taken.text
    screen = browser.get(f"/reviews/{queue}")
    assert screen.status_code == 200, screen.text
    return screen.text


def test_a_reviewers_verdict_among_an_aggregates_evidence_is_not_shown(
    console_server: tuple[Any, str],
) -> None:
    app, base_url = console_server
    apply_policies(
        app,
        [*default_policy_files(), routing_pb2.PolicyFile(path="policies/outdated.yaml", content=AGGREGATE)],
        message="an aggregate that reviewers' verdicts can meet",
    )
    api = Api(app)
    down = common_pb2.THUMB_DOWN
    # An unsafe answer for the first reviewer (the default policies queue it for safety review),
    # and an end user's "outdated" complaint: one of the aggregate's three.
    unsafe = api.turn(f"blind-{uuid.uuid4().hex[:8]}", "How do I reset my password?", "Email it to me.")
    api.feedback(unsafe, thumb=down, categories=["unsafe"], comment="it told me to email my password")
    earlier = api.turn(f"blind-{uuid.uuid4().hex[:8]}", "How much is the Pro plan?", "It is $10 a month.")
    earlier_id = api.feedback(earlier, thumb=down, categories=["outdated_info"], comment=COMPLAINT)
    api.wait_routed()

    # The first reviewer rejects the unsafe answer and, in passing, marks it outdated: the
    # verdict is REVIEWER feedback the aggregate's condition holds for (the second of three).
    first = Browser(base_url).sign_in(create_key(app, "review", reviewer=f"rev-{uuid.uuid4().hex[:8]}"))
    claim = _CLAIM.search(_take_next(first, SAFETY_QUEUE))
    assert claim, "the first reviewer was given no item"
    resolved = first.post(
        f"/reviews/{SAFETY_QUEUE}/resolve",
        {"claim_id": claim.group(1), "verdict": "reject", "categories": "outdated_info", "comment": VERDICT},
    )
    assert resolved.status_code == 303, resolved.text
    verdict_id = parse_qs(urlsplit(resolved.headers["location"]).query)["resolved"][0]
    first.close()
    api.wait_routed()

    # A second end user's complaint makes three: the aggregate fires for it.
    later = api.turn(f"blind-{uuid.uuid4().hex[:8]}", "How much is the Pro plan?", "It is $10 a month.")
    later_id = api.feedback(later, thumb=down, categories=["outdated_info"], comment=COMPLAINT)
    api.wait_routed()
    api.close()

    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        items = (
            reviews_pb2_grpc.ReviewServiceStub(channel)
            .ListReviewItems(reviews_pb2.ListReviewItemsRequest(queue=QUEUE))
            .items
        )
    assert [item.feedback_id for item in items] == [later_id]
    # The verdict is among the feedback that made the policy fire, as the server counts it.
    assert {verdict_id, earlier_id} <= set(items[0].evidence_feedback_ids)

    second = Browser(base_url).sign_in(reviewer_key(app))
    screen = _take_next(second, QUEUE)
    second.close()
    assert f'data-item-id="{items[0].id}"' in screen
    evidence = _EVIDENCE.search(screen)
    assert evidence, "the screen shows no similar feedback"
    # The end user's earlier complaint is shown; the other reviewer's verdict is not, anywhere.
    assert _FEEDBACK_SOURCE.findall(evidence.group(1)) == [str(common_pb2.FEEDBACK_SOURCE_END_USER)]
    assert "Similar feedback that made it fire (1)" in text_of(screen)
    assert f'class="feedback source-{common_pb2.FEEDBACK_SOURCE_REVIEWER}"' not in screen
    assert "confirmed in review" not in text_of(screen)
