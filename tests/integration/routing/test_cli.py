"""The routing CLI against a real server: plan -out, apply PLANFILE (stale refused), history, explain."""

from __future__ import annotations

import argparse
from pathlib import Path

from routing_support import Harness

from feedbackloop.routing import cli


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_plan_apply_history(h: Harness, example_policies: Path, tmp_path: Path, capsys) -> None:
    server = ("--server", f"127.0.0.1:{h.app.port}")
    assert run("policy", "validate", str(example_policies)) == 0
    plan_file = tmp_path / "plan.json"
    assert (
        run("policy", "plan", str(example_policies), "-out", str(plan_file), "--detailed-exitcode", *server)
        == 2
    )
    out = capsys.readouterr().out
    assert "Plan: 9 to add, 0 to change, 0 to destroy." in out
    assert run("policy", "apply", str(plan_file), *server) == 0
    assert "Apply complete: revision 1" in capsys.readouterr().out
    # The saved plan was made against revision 0: applying it again is refused as stale.
    assert run("policy", "apply", str(plan_file), *server) == 1
    assert "saved plan is stale" in capsys.readouterr().err
    assert run("policy", "plan", str(example_policies), "--detailed-exitcode", *server) == 0
    assert run("policy", "history", *server) == 0
    assert "(live)" in capsys.readouterr().out
    assert run("policy", "show", "1", *server) == 0
    assert "kind: RoutingPolicy" in capsys.readouterr().out
    assert run("prompt", "get", "support-answer", *server) == 0
    assert "You are the support assistant" in capsys.readouterr().out
    assert run("explain", "fb_missing", *server) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_dataset_export_writes_the_stream_to_a_file(
    h: Harness, example_policies: Path, tmp_path: Path, capsys
) -> None:
    from routing_support import files_of

    server = ("--server", f"127.0.0.1:{h.app.port}")
    h.apply(files_of(example_policies))
    interaction = h.interaction("s2", question="What is the refund window?", response="7 days.")
    h.feedback(interaction, "s2", correction="The refund window is 30 days.")
    h.route_pending()
    output = tmp_path / "corrections.jsonl"
    assert (
        run("dataset", "export", "support-corrections", "-o", str(output), "--format", "plain", *server) == 0
    )
    assert "wrote 1 item(s)" in capsys.readouterr().err
    (line,) = output.read_text(encoding="utf-8").splitlines()
    assert "The refund window is 30 days." in line
    assert not (tmp_path / "corrections.jsonl.partial").exists()
    # An export that fails (the server is not there) leaves no file behind.
    missing = tmp_path / "missing.jsonl"
    assert run("dataset", "export", "support-corrections", "-o", str(missing), "--server", "127.0.0.1:1") == 3
    assert not missing.exists() and not (tmp_path / "missing.jsonl.partial").exists()
