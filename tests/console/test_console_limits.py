"""Sizes the console must carry, over real HTTP against a real server: a planned policy set over
a megabyte goes from plan to apply (it travels back in one form field), a set over the
server's limit is refused at plan naming the field, and a dataset export is streamed as the
server reads it, page by page, complete and in order, broken off (not cut short) when the
server fails midway."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from screens_support import (
    Browser,
    apply_form_fields,
    live_revision,
    policy_uploads,
    quality_review_policy,
    routing_stub,
    text_of,
)

from feedbackloop.console.pages import datasets as datasets_page
from feedbackloop.console.pages.policies import APPLY_FORM
from feedbackloop.console.pages.policy_upload import MAX_FILES
from feedbackloop.policy.loader import MAX_FILE_BYTES, MAX_SET_BYTES
from feedbackloop.routing import dataset_service
from feedbackloop.store.routing_models import DatasetItemRow
from feedbackloop.v1 import routing_pb2

DATASET = "export-in-pages"
ROWS = 7
PAGE = 2  # the server's export page, lowered: 7 rows are 4 pages


def _padded(name: str, size: int) -> str:
    """A valid policy file of `size` bytes: a routing policy, then comment lines."""
    head = quality_review_policy(name)
    line = "# " + '"quoted" & padded, as a comment #' * 3 + "\n"  # grows about threefold encoded
    body = head + line * ((size - len(head)) // len(line))
    return body + "#" * (size - len(body) - 1) + "\n"


def test_a_planned_set_over_a_megabyte_is_applied(console_server: tuple[Any, str], browser: Browser) -> None:
    """The planned files go back to apply in one hidden field, which Starlette alone caps at
    1 MiB: a set the plan step accepts must not be refused there."""
    app, _ = console_server
    before = live_revision(app)
    big = _padded("console-big", MAX_FILE_BYTES)  # the largest file the plan step takes
    uploads = policy_uploads("big.yaml", big)
    assert sum(len(content) for _, (_, content, _) in uploads) > 1024 * 1024
    planned = browser.post("/policies/plan", {"backtest_window": "none"}, files=uploads)
    assert planned.status_code == 200, text_of(planned.text)[:500]
    assert "RoutingPolicy/console-big will be created" in text_of(planned.text)
    form = apply_form_fields(planned.text)
    assert len(form["files_json"]) > 1024 * 1024
    applied = browser.post("/policies/apply", {**form, "message": "a big set"})
    assert applied.status_code == 303, text_of(applied.text)[:500]
    assert live_revision(app) == before + 1
    live = routing_stub(app).GetRevision(routing_pb2.GetRevisionRequest()).yaml
    assert "console-big" in live


def test_a_set_over_the_servers_limit_is_refused_at_plan_naming_the_field(
    console_server: tuple[Any, str], browser: Browser
) -> None:
    app, _ = console_server
    before = live_revision(app)
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
    assert 'action="/policies/apply"' not in refused.text and live_revision(app) == before


def test_a_form_over_its_actions_limits_is_a_page_saying_which(
    console_server: tuple[Any, str], browser: Browser
) -> None:
    """Each form is parsed within its own limits (files, fields, a field's size), not
    Starlette's defaults: a page of the console names the limit, and nothing changes."""
    app, _ = console_server
    before = live_revision(app)
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
    assert live_revision(app) == before


@pytest.fixture(scope="module")
def rows(console_server: tuple[Any, str]) -> list[str]:
    """ROWS items of one dataset, written to the server's store, oldest first."""
    app, _ = console_server
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    ids = [f"di_stream_{i:02d}" for i in range(ROWS)]
    with app.db.write() as session:
        for i, item_id in enumerate(ids):
            session.add(
                DatasetItemRow(
                    id=item_id,
                    project_id="default",
                    dataset=DATASET,
                    dedup_key=item_id,
                    policy="test",
                    revision=1,
                    input_messages=[{"role": "user", "content": f"question {i}"}],
                    output=f"answer {i}",
                    ideal_output=f"ideal {i}",
                    created_at=start + dt.timedelta(minutes=i),
                )
            )
    return ids


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's export reads PAGE rows a query."""
    monkeypatch.setattr(dataset_service, "EXPORT_PAGE", PAGE)


@pytest.fixture
def line_by_line(small_pages: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console sends each line as it comes (not 64 KiB at a time)."""
    monkeypatch.setattr(datasets_page, "EXPORT_CHUNK_BYTES", 1)


def _before_page(monkeypatch: pytest.MonkeyPatch, number: int, then: Callable[[], object]) -> None:
    """The server's read of export page `number` (1-based) runs `then` first."""
    original = dataset_service.DatasetServicer._items
    calls = {"n": 0}

    def items(self: Any, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == number:
            then()
        return original(self, *args)

    monkeypatch.setattr(dataset_service.DatasetServicer, "_items", items)


def _ids(lines: list[str]) -> list[str]:
    return [json.loads(line)["id"] for line in lines]


def test_an_export_of_many_pages_is_complete_in_order_and_streamed(
    rows: list[str], browser: Browser, small_pages: None
) -> None:
    reply = browser.get(f"/datasets/{DATASET}/export", format="plain")
    assert reply.status_code == 200, reply.text
    assert _ids(reply.text.splitlines()) == rows
    # Streamed: no length known up front, sent in chunks.
    assert "content-length" not in reply.headers
    assert reply.headers["transfer-encoding"] == "chunked"
    assert reply.headers["content-disposition"] == f'attachment; filename="{DATASET}-plain.jsonl"'


def test_the_first_lines_arrive_while_the_server_still_reads_the_rest(
    rows: list[str], browser: Browser, line_by_line: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    _before_page(monkeypatch, 2, lambda: release.wait(30))
    try:
        with browser.client.stream("GET", f"/datasets/{DATASET}/export?format=plain", timeout=10) as reply:
            assert reply.status_code == 200
            lines = reply.iter_lines()
            first = [next(lines) for _ in range(PAGE)]  # while the server is held at page 2
            assert _ids(first) == rows[:PAGE] and not release.is_set()
            release.set()
            assert _ids(first + [line for line in lines if line]) == rows
    finally:
        release.set()


def test_a_server_failing_midway_breaks_the_download_off(
    rows: list[str], browser: Browser, line_by_line: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a file that looks complete: the connection ends without the response's end, so a
    browser reports the download failed."""

    def fail() -> None:
        raise RuntimeError("the store went away")

    _before_page(monkeypatch, 3, fail)
    got: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        browser.client.stream("GET", f"/datasets/{DATASET}/export?format=plain", timeout=10) as reply,
    ):
        assert reply.status_code == 200
        got.extend(line for line in reply.iter_lines() if line)
    assert _ids(got) == rows[: 2 * PAGE]


def test_a_server_sending_nothing_for_too_long_is_a_timeout_page(
    rows: list[str], browser: Browser, line_by_line: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No deadline on the whole export, but one on each wait for the next line."""
    monkeypatch.setattr(datasets_page, "EXPORT_IDLE_SECONDS", 0.5)
    release = threading.Event()
    _before_page(monkeypatch, 1, lambda: release.wait(30))
    try:
        reply = browser.client.get(f"/datasets/{DATASET}/export", timeout=10)
        assert reply.status_code == 504
        assert "the server sent nothing for 0.5 s" in text_of(reply.text)
    finally:
        release.set()


def test_a_refused_export_is_still_an_error_page(browser: Browser) -> None:
    """The first line is awaited before the download begins, so a refusal has its page."""
    reply = browser.get("/datasets/no-such-dataset/export")
    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("text/html")
    assert 'no dataset "no-such-dataset" in this project' in text_of(reply.text)
