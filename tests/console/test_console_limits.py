"""Sizes the console must carry, over real HTTP against a real server: a planned policy set over
a megabyte goes from plan to apply (it travels back in one form field), a set over the
server's limit is refused at plan naming the field, and a form past its action's limits is a
page naming the limit."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from screens_support import POLICIES, Browser, text_of

from feedbackloop.console.pages.policies import APPLY_FORM
from feedbackloop.console.pages.policy_upload import MAX_FILES
from feedbackloop.policy.loader import MAX_FILE_BYTES, MAX_SET_BYTES
from feedbackloop.v1 import routing_pb2, routing_pb2_grpc

POLICY = (
    "apiVersion: feedbackloop/v1\nkind: RoutingPolicy\nmetadata:\n  name: NAME\nspec:\n"
    '  when: feedback.thumb == "down"\n  priority: 5\n  actions:\n    - human_review: {queue: quality-review}\n'
)


@pytest.fixture
def browser(console_server: tuple[Any, str]) -> Iterator[Browser]:
    b = Browser(console_server[1]).sign_in()
    yield b
    b.close()


def _routing(app: Any) -> Any:
    return routing_pb2_grpc.RoutingServiceStub(grpc.insecure_channel(f"127.0.0.1:{app.port}"))


def _live(app: Any) -> int:
    return int(_routing(app).ListRevisions(routing_pb2.ListRevisionsRequest()).live_revision)


def _policy_files(extra_name: str, extra: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    files = [("files", (p.name, p.read_bytes(), "application/yaml")) for p in sorted(POLICIES.glob("*.yaml"))]
    return [*files, ("files", (extra_name, extra.encode(), "application/yaml"))]


def _apply_form(page: str) -> dict[str, str]:
    form = re.search(r'<form method="post" action="/policies/apply".*?</form>', page, re.S)
    assert form, text_of(page)[:500]
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', form.group(0)))
    return {name: html.unescape(value) for name, value in fields.items()}


def _padded(name: str, size: int) -> str:
    """A valid policy file of `size` bytes: a routing policy, then comment lines."""
    head = POLICY.replace("NAME", name)
    line = "# " + '"quoted" & padded, as a comment #' * 3 + "\n"  # grows about threefold encoded
    body = head + line * ((size - len(head)) // len(line))
    return body + "#" * (size - len(body) - 1) + "\n"


def test_a_planned_set_over_a_megabyte_is_applied(console_server: tuple[Any, str], browser: Browser) -> None:
    """The planned files go back to apply in one hidden field, which Starlette alone caps at
    1 MiB: a set the plan step accepts must not be refused there."""
    app, _ = console_server
    before = _live(app)
    big = _padded("console-big", MAX_FILE_BYTES)  # the largest file the plan step takes
    uploads = _policy_files("big.yaml", big)
    assert sum(len(content) for _, (_, content, _) in uploads) > 1024 * 1024
    planned = browser.post("/policies/plan", {"backtest_window": "none"}, files=uploads)
    assert planned.status_code == 200, text_of(planned.text)[:500]
    assert "RoutingPolicy/console-big will be created" in text_of(planned.text)
    form = _apply_form(planned.text)
    assert len(form["files_json"]) > 1024 * 1024
    applied = browser.post("/policies/apply", {**form, "message": "a big set"})
    assert applied.status_code == 303, text_of(applied.text)[:500]
    assert _live(app) == before + 1
    live = _routing(app).GetRevision(routing_pb2.GetRevisionRequest()).yaml
    assert "console-big" in live


def test_a_set_over_the_servers_limit_is_refused_at_plan_naming_the_field(
    console_server: tuple[Any, str], browser: Browser
) -> None:
    app, _ = console_server
    before = _live(app)
    uploads = [
        ("files", (f"part{i}.yaml", _padded(f"console-part{i}", MAX_FILE_BYTES).encode(), "application/yaml"))
        for i in range(MAX_SET_BYTES // MAX_FILE_BYTES + 1)
    ]
    total = sum(len(content) for _, (_, content, _) in uploads)
    refused = browser.post("/policies/plan", {"backtest_window": "none"}, files=uploads)
    assert refused.status_code == 400
    assert f"files: the policy set is {total:,} bytes; the limit for a set is {MAX_SET_BYTES:,}" in text_of(
        refused.text
    )
    assert 'action="/policies/apply"' not in refused.text and _live(app) == before


def test_a_form_over_its_actions_limits_is_a_page_saying_which(
    console_server: tuple[Any, str], browser: Browser
) -> None:
    """Each form is parsed within its own limits (files, fields, a field's size), not
    Starlette's defaults: a page of the console names the limit, and nothing changes."""
    app, _ = console_server
    before = _live(app)
    many = [("files", (f"p{i}.yaml", b"", "application/yaml")) for i in range(MAX_FILES + 1)]
    too_many = browser.post("/policies/plan", {"backtest_window": "none"}, files=many)
    assert too_many.status_code == 400
    assert f"The form could not be read: Too many files. Maximum number of files is {MAX_FILES}." in text_of(
        too_many.text
    )
    # A form that takes no file (rolling back) refuses one instead of spooling it to disk.
    stray = browser.post(
        "/policies/rollback",
        {"revision": "1", "expected_revision": str(before)},
        files=[("files", ("a.yaml", b"x", "application/yaml"))],
    )
    assert stray.status_code == 400
    assert "Too many files. Maximum number of files is 0." in text_of(stray.text)
    fields = browser.post("/policies/apply", {f"f{i}": "x" for i in range(APPLY_FORM.max_fields + 1)})
    assert fields.status_code == 400
    assert f"Too many fields. Maximum number of fields is {APPLY_FORM.max_fields}." in text_of(fields.text)
    assert _live(app) == before
