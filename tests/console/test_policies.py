"""The policies screen: the live revision, its history and rollback, and a plan of uploaded files
or a saved plan.json (diff and backtest) applied through ApplyPolicies with the revision it was
planned against; over real HTTP against a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from console_support import create_key
from screens_support import (
    POLICIES,
    Browser,
    apply_form_fields,
    live_revision,
    policy_uploads,
    quality_review_policy,
    routing_stub,
    text_of,
)

from feedbackloop.cli import main as cli_main
from feedbackloop.v1 import routing_pb2

EXTRA = quality_review_policy("console-extra")


def test_the_live_revision_is_shown_as_yaml_with_its_history(
    console_server: tuple[Any, str], browser: Browser
) -> None:
    app, _ = console_server
    reply = browser.get("/policies")
    assert reply.status_code == 200, reply.text
    live = live_revision(app)
    yaml_text = routing_stub(app).GetRevision(routing_pb2.GetRevisionRequest()).yaml
    assert f"Revision {live} live" in text_of(reply.text)
    assert "kind: RoutingPolicy" in text_of(reply.text)
    assert yaml_text.splitlines()[1] in text_of(reply.text)
    assert f'<tr id="revision-{live}">' in reply.text


def test_a_plan_of_uploaded_files_shows_the_diff_and_backtest_and_applies_over_its_revision(
    console_server: tuple[Any, str], browser: Browser
) -> None:
    app, _ = console_server
    before = live_revision(app)
    planned = browser.post(
        "/policies/plan", {"backtest_window": "7d"}, files=policy_uploads("extra.yaml", EXTRA)
    )
    assert planned.status_code == 200, planned.text
    text = text_of(planned.text)
    assert f"1 to add, 0 to change, 0 to destroy · planned against revision {before}" in text
    assert "RoutingPolicy/console-extra will be created" in text
    assert '<tr id="backtest-console-extra">' in planned.text
    form = apply_form_fields(planned.text)
    assert form["expected_revision"] == str(before)
    assert [f["path"] for f in json.loads(form["files_json"])][-1] == "extra.yaml"
    applied = browser.post("/policies/apply", {**form, "message": "from the console"})
    assert applied.status_code == 303
    assert live_revision(app) == before + 1
    shown = browser.client.get(applied.headers["location"])
    assert f"Applied: revision {before + 1} is live." in text_of(shown.text)
    assert "from the console" in text_of(shown.text) and "console-extra" in shown.text
    # The same form again is stale: the live revision moved on, and ApplyPolicies refuses it.
    stale = browser.post("/policies/apply", {**form, "message": "again"})
    assert stale.status_code == 409 and "The plan is stale" in text_of(stale.text)
    assert live_revision(app) == before + 1


def test_a_saved_plan_json_from_the_cli_is_planned_and_applied_as_saved(
    console_server: tuple[Any, str], browser: Browser, tmp_path: Path
) -> None:
    app, _ = console_server
    directory = tmp_path / "policies"
    directory.mkdir()
    for p in POLICIES.glob("*.yaml"):
        (directory / p.name).write_bytes(p.read_bytes())
    (directory / "extra.yaml").write_text(quality_review_policy("console-saved"))
    saved = tmp_path / "plan.json"
    assert (
        cli_main(["policy", "plan", str(directory), "--out", str(saved), "--server", f"127.0.0.1:{app.port}"])
        == 0
    )
    base = json.loads(saved.read_text())["base_revision"]
    planned = browser.post(
        "/policies/plan",
        {"backtest_window": "none"},
        files=[("files", ("plan.json", saved.read_bytes(), "application/json"))],
    )
    assert planned.status_code == 200, planned.text
    assert "RoutingPolicy/console-saved will be created" in text_of(planned.text)
    assert 'id="backtest-title"' not in planned.text
    form = apply_form_fields(planned.text)
    assert form["expected_revision"] == str(base)
    applied = browser.post("/policies/apply", form)
    assert applied.status_code == 303 and live_revision(app) == base + 1
    # Planned again now, the saved plan is behind the live revision: the page says so.
    stale = browser.post(
        "/policies/plan",
        {"backtest_window": "none"},
        files=[("files", ("plan.json", saved.read_bytes(), "application/json"))],
    )
    assert f"saved against revision {base}, but revision {base + 1} is live" in text_of(stale.text)


def test_bad_uploads_are_refused_naming_the_field_or_the_file(browser: Browser) -> None:
    invalid = browser.post(
        "/policies/plan",
        files=[
            ("files", ("bad.yaml", b"apiVersion: feedbackloop/v1\nkind: [unclosed\n", "application/yaml"))
        ],
    )
    assert invalid.status_code == 400
    assert "bad.yaml:3:1: YAML syntax error" in text_of(invalid.text)
    assert 'action="/policies/apply"' not in invalid.text
    text = browser.post("/policies/plan", files=[("files", ("notes.txt", b"hello", "text/plain"))])
    assert text.status_code == 400 and "files: notes.txt is neither a policy file" in text_of(text.text)
    fake = browser.post(
        "/policies/plan", files=[("files", ("plan.json", b'{"format": "other"}', "application/json"))]
    )
    assert fake.status_code == 400 and "is not a saved plan" in text_of(fake.text)
    nothing = browser.post(
        "/policies/plan", {"backtest_window": "7d"}, files=[("files", ("", b"", "application/octet-stream"))]
    )
    assert nothing.status_code == 400 and "files: choose policy files" in text_of(nothing.text)
    assert browser.post("/policies/apply", {"files_json": "[]", "expected_revision": "1"}).status_code == 400


def test_rolling_back_makes_a_new_revision_with_the_old_content(
    console_server: tuple[Any, str], browser: Browser
) -> None:
    app, _ = console_server
    live = live_revision(app)
    page = browser.get("/policies").text
    assert "Roll back to revision 1" in page
    rolled = browser.post("/policies/rollback", {"revision": "1", "expected_revision": str(live)})
    assert rolled.status_code == 303
    assert live_revision(app) == live + 1
    revision = routing_stub(app).GetRevision(routing_pb2.GetRevisionRequest()).revision
    assert revision.kind == routing_pb2.REVISION_KIND_ROLLBACK and revision.source_revision == 1
    stale = browser.post("/policies/rollback", {"revision": "1", "expected_revision": str(live)})
    assert stale.status_code == 409


def test_a_policy_key_plans_but_cannot_apply_or_roll_back_and_a_read_key_cannot_plan(
    console_server: tuple[Any, str],
) -> None:
    app, base_url = console_server
    planner = Browser(base_url).sign_in(create_key(app, "read", "policy"))
    live = live_revision(app)
    page = planner.get("/policies").text
    assert "Roll back to revision" not in page
    uploads = policy_uploads("extra.yaml", quality_review_policy("console-read"))
    planned = planner.post("/policies/plan", {"backtest_window": "none"}, files=uploads)
    assert planned.status_code == 200, text_of(planned.text)
    assert 'action="/policies/apply"' not in planned.text
    assert "Applying needs a key with the admin scope" in text_of(planned.text)
    refused = planner.post(
        "/policies/apply",
        {"files_json": json.dumps([{"path": "x.yaml", "content": EXTRA}]), "expected_revision": str(live)},
    )
    assert refused.status_code == 403 and "this API key lacks the 'admin' scope" in text_of(refused.text)
    assert (
        planner.post("/policies/rollback", {"revision": "1", "expected_revision": str(live)}).status_code
        == 403
    )
    assert live_revision(app) == live
    planner.close()
    reader = Browser(base_url).sign_in(create_key(app, "read"))
    assert "Planning needs a key with the policy scope" in text_of(reader.get("/policies/plan").text)
    refused_plan = reader.post("/policies/plan", {"backtest_window": "none"}, files=uploads)
    assert refused_plan.status_code == 403
    assert "this API key lacks the 'policy' scope" in text_of(refused_plan.text)
    reader.close()
