"""Helpers for the console screen tests: a signed-in HTTP client, data through the gRPC API,
waiting for the pipeline to route it, and policy files to plan and apply."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx

from feedbackloop.v1 import (
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    pipeline_pb2,
    pipeline_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)

_HIDDEN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META_TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


class Browser:
    """An HTTP client holding one console session (its cookie and CSRF token)."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=60.0)
        self.csrf = ""

    def sign_in(self, key: str | None = None) -> Browser:
        form = self.client.get("/sign-in")
        token = _HIDDEN_TOKEN.search(form.text)
        assert token, form.text
        data = {"csrf_token": token.group(1), "next": "/reviews"}
        data.update({"keyless": "1"} if key is None else {"api_key": key})
        reply = self.client.post("/sign-in", data=data)
        assert reply.status_code == 303, reply.text
        page = self.client.get("/reviews")
        meta = _META_TOKEN.search(page.text)
        assert meta, page.text
        self.csrf = meta.group(1)
        return self

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params or None)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kwargs)

    def close(self) -> None:
        self.client.close()


def text_of(page: str) -> str:
    """The page's text without tags, entities decoded and whitespace collapsed."""
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    return re.sub(r" ([.,:;)])", r"\1", text)  # a tag before punctuation left a space


def plots_of(page: str) -> dict[str, Any]:
    """A screen's plots: each `<script type="application/json">` block's data, by its id."""
    blocks = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, re.S)
    return {name: json.loads(body) for name, body in blocks}


class Api:
    """The gRPC API of the server behind the console."""

    def __init__(self, app: Any, key: str | None = None) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
        self.metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.ingest = ingestion_pb2_grpc.IngestionServiceStub(self.channel)
        self.pipeline = pipeline_pb2_grpc.PipelineServiceStub(self.channel)

    def turn(
        self,
        session_id: str,
        question: str,
        response: str,
        *,
        turn_index: int = 0,
        prompt: str = "support-answer",
        model_version: str = "2024-08-06",
    ) -> str:
        return str(
            self.ingest.RecordInteraction(
                ingestion_pb2.RecordInteractionRequest(
                    interaction=common_pb2.Interaction(
                        session_id=session_id,
                        turn_index=turn_index,
                        prompt=common_pb2.PromptRef(name=prompt, version="1"),
                        model=common_pb2.ModelRef(name="gpt", version=model_version),
                        input_messages=[common_pb2.ChatMessage(role="user", content=question)],
                        response=response,
                    )
                ),
                metadata=self.metadata,
            ).interaction_id
        )

    def feedback(self, interaction_id: str, **fields: Any) -> str:
        return str(
            self.ingest.SubmitFeedback(
                ingestion_pb2.SubmitFeedbackRequest(
                    feedback=common_pb2.Feedback(interaction_id=interaction_id, **fields)
                ),
                metadata=self.metadata,
            ).feedback_id
        )

    def wait_routed(self, timeout: float = 90.0) -> None:
        """Until the pipeline has indexed and routed everything submitted so far."""
        wait_for(
            lambda: (
                status.pending_index == status.pending_route == 0
                if (status := self.pipeline.GetPipelineStatus(pipeline_pb2.GetPipelineStatusRequest()))
                else False
            ),
            timeout,
        )

    def close(self) -> None:
        self.channel.close()


def wait_for(condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s")
        time.sleep(0.1)


POLICIES = Path(__file__).resolve().parents[2] / "policies"
# A policy that proposes a guideline patch for every feedback from a user of this role.
PATCHER_ROLE = "patch-tester"
PATCHER = (
    "apiVersion: feedbackloop/v1\nkind: RoutingPolicy\nmetadata:\n  name: console-patcher\nspec:\n"
    f'  when: feedback.user_role == "{PATCHER_ROLE}"\n  priority: 500\n'
    "  actions:\n    - prompt_patch: {prompt: support-answer, strategy: append_guideline, approval: required,"
    " template: 'Never say: {{comment}}'}\n"
)


def default_policy_files() -> list[routing_pb2.PolicyFile]:
    return [
        routing_pb2.PolicyFile(path=f"policies/{p.name}", content=p.read_text(encoding="utf-8"))
        for p in sorted(POLICIES.glob("*.yaml"))
    ]


def apply_policies(app: Any, files: list[routing_pb2.PolicyFile], message: str = "") -> Any:
    """ApplyPolicies over whatever is live, keyless (the loopback default project)."""
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = routing_pb2_grpc.RoutingServiceStub(channel)
        return stub.ApplyPolicies(routing_pb2.ApplyPoliciesRequest(files=files, message=message))


def quality_review_policy(name: str) -> str:
    """A routing policy file, `name`, that sends every thumbs-down to the quality-review queue."""
    return (
        f"apiVersion: feedbackloop/v1\nkind: RoutingPolicy\nmetadata:\n  name: {name}\nspec:\n"
        '  when: feedback.thumb == "down"\n  priority: 5\n  actions:\n    - human_review: {queue: quality-review}\n'
    )


def policy_uploads(extra_name: str, extra: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The plan form's `files`: the default policy files, then `extra` as a file named `extra_name`."""
    files = [("files", (p.name, p.read_bytes(), "application/yaml")) for p in sorted(POLICIES.glob("*.yaml"))]
    return [*files, ("files", (extra_name, extra.encode(), "application/yaml"))]


def apply_form_fields(page: str) -> dict[str, str]:
    """The hidden fields of a plan page's apply form, unescaped; fails if the page has no such form."""
    form = re.search(r'<form method="post" action="/policies/apply".*?</form>', page, re.S)
    assert form, text_of(page)[:500]
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', form.group(0)))
    return {name: html.unescape(value) for name, value in fields.items()}


def routing_stub(app: Any) -> routing_pb2_grpc.RoutingServiceStub:
    """RoutingService of the server behind the console, keyless (the loopback default project)."""
    return routing_pb2_grpc.RoutingServiceStub(grpc.insecure_channel(f"127.0.0.1:{app.port}"))


def live_revision(app: Any) -> int:
    """The number of the live policy revision."""
    return int(routing_stub(app).ListRevisions(routing_pb2.ListRevisionsRequest()).live_revision)
