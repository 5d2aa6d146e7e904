"""Helpers for the console tests: a server with the console on, API keys, signing in, screenshots."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def running_console(data_dir: Path, embedder: Any, **overrides: Any) -> Iterator[tuple[Any, str]]:
    """A server with the console on a free port; yields (App, console base URL)."""
    from feedbackloop.config import Settings
    from feedbackloop.server import App

    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "policies_dir": POLICIES,
        "console": "on",
        "console_port": 0,
        "pipeline_poll_seconds": 0.05,
        "embedding_batch_max_wait_ms": 20,
    }
    values.update(overrides)
    app = App(Settings(**values), embedder=embedder)
    app.start()
    try:
        assert app.console is not None, "the console did not start"
        yield app, f"http://127.0.0.1:{app.console.port}"
    finally:
        app.stop(grace=1.0)


def create_key(app: Any, *scopes: str, project: str = "default", reviewer: str = "") -> str:
    """A new API key on the server's store (`feedbackloop keys create`)."""
    from feedbackloop import auth
    from feedbackloop.store import keys

    return keys.create_key(
        app.db, project, frozenset(auth.Scope(scope) for scope in scopes), reviewer=reviewer
    )


def reviewer_key(app: Any) -> str:
    """A new key of a reviewer of their own (`review` and `read`, a fresh reviewer name)."""
    return create_key(app, "review", "read", reviewer=f"rev-{uuid.uuid4().hex[:8]}")


def chromium_path() -> str | None:
    configured = os.environ.get("FEEDBACKLOOP_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def screenshot_dir() -> Path:
    """Where tests write screenshots (never committed): $FEEDBACKLOOP_SCREENSHOTS or screenshots/."""
    directory = Path(os.environ.get("FEEDBACKLOOP_SCREENSHOTS") or REPO / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def sign_in(page: Any, base_url: str, key: str | None = None) -> None:
    """Sign in through the form: with a key, or keyless on a loopback server."""
    page.goto(f"{base_url}/sign-in")
    if key is None:
        page.get_by_role("button", name="Continue without a key").click()
    else:
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/sign-in" not in url)


# --- items to review, through the public gRPC API ---

SAFETY_QUEUE = "safety-review"  # the default policies send feedback marked `unsafe` here


def stubs(app: Any) -> SimpleNamespace:
    """gRPC stubs on the server (keyless: the loopback default project)."""
    from feedbackloop.v1 import ingestion_pb2_grpc, reviews_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
    return SimpleNamespace(
        channel=channel,
        ingestion=ingestion_pb2_grpc.IngestionServiceStub(channel),
        reviews=reviews_pb2_grpc.ReviewServiceStub(channel),
    )


def submit_unsafe(
    app: Any, comment: str, *, response: str = "Here is how to do that.", correction: str = ""
) -> tuple[str, str]:
    """An interaction in a session of its own and an `unsafe` thumbs down on it, which the
    default policies queue for safety review (and, with a correction, add to the
    `support-corrections` dataset); (session id, feedback id)."""
    from feedbackloop.v1 import common_pb2, ingestion_pb2

    api = stubs(app)
    session_id = f"s-{uuid.uuid4().hex[:12]}"
    try:
        interaction = api.ingestion.RecordInteraction(
            ingestion_pb2.RecordInteractionRequest(
                interaction=common_pb2.Interaction(
                    session_id=session_id,
                    turn_index=0,
                    input_messages=[
                        common_pb2.ChatMessage(role="user", content="How do I reset my password?")
                    ],
                    response=response,
                )
            )
        )
        feedback = api.ingestion.SubmitFeedback(
            ingestion_pb2.SubmitFeedbackRequest(
                feedback=common_pb2.Feedback(
                    session_id=session_id,
                    interaction_id=interaction.interaction_id,
                    thumb=common_pb2.THUMB_DOWN,
                    categories=["unsafe"],
                    comment=comment,
                    correction=correction,
                )
            )
        )
    finally:
        api.channel.close()
    return session_id, feedback.feedback_id


def wait_queued(
    app: Any, feedback_ids: Iterable[str], queue: str = SAFETY_QUEUE, timeout: float = 30.0
) -> None:
    """Until the pipeline has routed every one of `feedback_ids` into `queue`."""
    from feedbackloop.v1 import reviews_pb2

    wanted = set(feedback_ids)
    api = stubs(app)
    deadline = time.monotonic() + timeout
    try:
        while True:
            queued: set[str] = set()
            token = ""
            while True:
                reply = api.reviews.ListReviewItems(
                    reviews_pb2.ListReviewItemsRequest(queue=queue, page_size=200, page_token=token)
                )
                queued.update(item.feedback_id for item in reply.items)
                token = reply.next_page_token
                if not token:
                    break
            if wanted <= queued:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not queued in {queue} after {timeout}s: {sorted(wanted - queued)}")
            time.sleep(0.1)
    finally:
        api.channel.close()


def get_session(app: Any, session_id: str) -> Any:
    from feedbackloop.v1 import ingestion_pb2

    api = stubs(app)
    try:
        return api.ingestion.GetSession(ingestion_pb2.GetSessionRequest(session_id=session_id))
    finally:
        api.channel.close()


def get_feedback(app: Any, feedback_id: str) -> Any:
    from feedbackloop.v1 import ingestion_pb2

    api = stubs(app)
    try:
        return api.ingestion.GetFeedback(ingestion_pb2.GetFeedbackRequest(feedback_id=feedback_id)).feedback
    finally:
        api.channel.close()


# --- a proposed prompt patch ---

PROMPT = "support-answer"
OUTDATED = [
    "The price you gave for the Pro plan is outdated.",
    "The Pro plan price you quoted is outdated.",
    "Outdated price for the Pro plan in your answer.",
    "The price of the Pro plan you gave is out of date.",
    "Your answer has an outdated Pro plan price.",
]


def propose_patch(app: Any, model_version: str, timeout: float = 60.0) -> Any:
    """Five near-identical `outdated_info` complaints on one prompt and model version: the
    default policies' aggregate proposes a patch of the prompt (approval required). The patch."""
    from feedbackloop.v1 import common_pb2, ingestion_pb2, prompts_pb2, prompts_pb2_grpc

    api = stubs(app)
    prompts = prompts_pb2_grpc.PromptServiceStub(api.channel)
    try:
        before = {p.id for p in prompts.ListPatches(prompts_pb2.ListPatchesRequest(prompt=PROMPT)).patches}
        for text in OUTDATED:
            interaction = api.ingestion.RecordInteraction(
                ingestion_pb2.RecordInteractionRequest(
                    interaction=common_pb2.Interaction(
                        session_id=f"s-{uuid.uuid4().hex[:12]}",
                        turn_index=0,
                        prompt=common_pb2.PromptRef(name=PROMPT, version="1"),
                        model=common_pb2.ModelRef(name="gpt", version=model_version),
                        input_messages=[
                            common_pb2.ChatMessage(role="user", content="How much is the Pro plan?")
                        ],
                        response="The Pro plan costs $10 a month.",
                    )
                )
            )
            api.ingestion.SubmitFeedback(
                ingestion_pb2.SubmitFeedbackRequest(
                    feedback=common_pb2.Feedback(
                        interaction_id=interaction.interaction_id,
                        thumb=common_pb2.THUMB_DOWN,
                        categories=["outdated_info"],
                        comment=text,
                    )
                )
            )
        deadline = time.monotonic() + timeout
        while True:
            patches = prompts.ListPatches(
                prompts_pb2.ListPatchesRequest(prompt=PROMPT, status=prompts_pb2.PATCH_STATUS_PROPOSED)
            ).patches
            fresh = [p for p in patches if p.id not in before]
            if fresh:
                return fresh[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no patch of {PROMPT} proposed after {timeout}s")
            time.sleep(0.2)
    finally:
        api.channel.close()


def production_version(app: Any) -> int:
    from feedbackloop.v1 import prompts_pb2, prompts_pb2_grpc

    api = stubs(app)
    try:
        reply = prompts_pb2_grpc.PromptServiceStub(api.channel).GetPrompt(
            prompts_pb2.GetPromptRequest(name=PROMPT)
        )
    finally:
        api.channel.close()
    return int(reply.prompt.production_version)
