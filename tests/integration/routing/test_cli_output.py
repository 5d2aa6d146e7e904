"""The CLI's output and its failures: where `dataset export` writes, one-line errors instead of
tracebacks, a closed pipe, and a line saying so when there is nothing to show.

Against a real server (the routing harness) through the commands' handlers, and as a
subprocess where the process itself matters (its standard output, a pipe closed under it).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from routing_support import Harness, files_of
from test_cli import run

DATASET = "support-corrections"
CORRECTION = "The refund window is 30 days."


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty directory of its own for the outputs (tmp_path also holds the store)."""
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


@pytest.fixture
def exported(h: Harness, example_policies: Path) -> tuple[str, ...]:
    """A server whose dataset holds one item; returns the connection arguments."""
    h.apply(files_of(example_policies))
    interaction = h.interaction("s2", question="What is the refund window?", response="7 days.")
    h.feedback(interaction, "s2", correction=CORRECTION)
    h.route_pending()
    return ("--server", f"127.0.0.1:{h.app.port}")


def export(server: tuple[str, ...], output: str, dataset: str = DATASET) -> int:
    return run("dataset", "export", dataset, "-o", output, "--format", "plain", *server)


def cli(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """The installed command line in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "feedbackloop.cli", *argv],
        capture_output=kwargs.pop("capture_output", True),  # type: ignore[arg-type]
        text=True,
        timeout=120,
        **kwargs,  # type: ignore[arg-type]
    )


def test_dash_means_standard_output(
    exported: tuple[str, ...], out: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(out)  # so that a file named "-" would show up here
    assert export(exported, "-") == 0
    captured = capsys.readouterr()
    assert CORRECTION in captured.out
    assert "wrote 1 item(s) to standard output" in captured.err
    assert list(out.iterdir()) == []


def test_a_link_to_standard_output_is_written_in_place(exported: tuple[str, ...], out: Path) -> None:
    # /dev/stdout itself, but through a link of the test's own: a regression must not be able to
    # replace the machine's /dev/stdout with a regular file.
    link = out / "stdout"
    link.symlink_to("/proc/self/fd/1")
    done = cli("dataset", "export", DATASET, "-o", str(link), "--format", "plain", *exported)
    assert done.returncode == 0, done.stderr
    assert CORRECTION in done.stdout
    assert os.readlink(link) == "/proc/self/fd/1"
    assert sorted(p.name for p in out.iterdir()) == ["stdout"]


def test_special_files_and_symlinks_to_them_are_written_in_place(
    exported: tuple[str, ...], out: Path
) -> None:
    to_null = out / "null"
    to_null.symlink_to("/dev/null")
    assert export(exported, str(to_null)) == 0
    assert os.readlink(to_null) == "/dev/null"
    assert not (out / "null.partial").exists()

    fifo = out / "fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    assert export(exported, str(fifo)) == 0
    reader.join(30)
    assert CORRECTION in received[0]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_symlink_to_a_regular_file_stays_a_symlink(exported: tuple[str, ...], out: Path) -> None:
    real = out / "real.jsonl"
    real.write_text("old\n", encoding="utf-8")
    link = out / "link.jsonl"
    link.symlink_to(real)
    assert export(exported, str(link)) == 0
    assert link.is_symlink()
    assert CORRECTION in real.read_text(encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == ["link.jsonl", "real.jsonl"]


def test_unwritable_targets_are_one_line_errors(exported: tuple[str, ...], out: Path, capsys) -> None:
    missing = out / "nope" / "out.jsonl"
    assert export(exported, str(missing)) == 1
    assert capsys.readouterr().err == f"error: -o {missing}: directory {missing.parent} does not exist\n"
    assert export(exported, str(out)) == 1
    assert capsys.readouterr().err == f"error: -o {out}: is a directory\n"
    assert list(out.iterdir()) == []
    # The same through the process: no traceback.
    done = cli("dataset", "export", DATASET, "-o", str(missing), *exported)
    assert (done.returncode, done.stderr) == (
        1,
        f"error: -o {missing}: directory {missing.parent} does not exist\n",
    )


def test_an_unknown_dataset_leaves_an_existing_file_alone(
    exported: tuple[str, ...], out: Path, capsys
) -> None:
    kept = out / "kept.jsonl"
    kept.write_text("earlier export\n", encoding="utf-8")
    assert export(exported, str(kept), dataset="no-such-dataset") == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert kept.read_text(encoding="utf-8") == "earlier export\n"
    assert sorted(p.name for p in out.iterdir()) == ["kept.jsonl"]


def test_broken_saved_plans_are_one_line_errors(
    h: Harness, example_policies: Path, tmp_path: Path, capsys
) -> None:
    server = ("--server", f"127.0.0.1:{h.app.port}")
    plan = tmp_path / "plan.json"
    assert run("policy", "plan", str(example_policies), "-out", str(plan), *server) == 0
    capsys.readouterr()
    whole = plan.read_text(encoding="utf-8")

    plan.write_text(whole[: len(whole) // 2], encoding="utf-8")
    assert run("policy", "apply", str(plan), *server) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {plan}: not a saved plan: invalid JSON at line ")
    assert line.endswith("truncated?); make it again with `feedbackloop policy plan DIR -out FILE`")

    saved = json.loads(whole)
    for broken, message in (
        ({k: v for k, v in saved.items() if k != "files"}, "files must be a non-empty list"),
        ({**saved, "base_revision": "zero"}, "base_revision must be a revision number"),
        ({**saved, "files": [{"path": "a.yaml"}]}, "files[0] needs a path and a content"),
    ):
        plan.write_text(json.dumps(broken), encoding="utf-8")
        assert run("policy", "apply", str(plan), *server) == 1
        assert capsys.readouterr().err == (
            f"error: {plan}: incomplete plan: {message}; make it again with "
            "`feedbackloop policy plan DIR -out FILE`\n"
        )
    plan.write_text("[1, 2]", encoding="utf-8")
    assert run("policy", "apply", str(plan), *server) == 1
    assert (
        capsys.readouterr().err == f'error: {plan} is not a saved plan (no "format": "feedbackloop-plan/1")\n'
    )
    assert h.live_revision() == 0  # nothing was applied
    assert (
        run("policy", "plan", str(example_policies), "-out", str(tmp_path / "no" / "plan.json"), *server) == 1
    )
    assert (
        capsys.readouterr().err
        == f"error: -out {tmp_path / 'no' / 'plan.json'}: directory {tmp_path / 'no'} does not exist\n"
    )


def test_a_closed_pipe_ends_the_command_quietly(example_policies: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line, as after `| head -1`
    try:
        done = cli(
            "policy",
            "validate",
            str(example_policies),
            stdout=write_end,
            capture_output=False,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


def test_commands_with_nothing_to_show_say_so(h: Harness, capsys) -> None:
    server = ("--server", f"127.0.0.1:{h.app.port}")
    for argv, line in (
        (("review", "list"), "no review items\n"),
        (("review", "list", "moderation"), "no review items in queue moderation\n"),
        (("prompt", "patches"), "no patches\n"),
        (("policy", "history"), "no policy revisions (nothing applied yet)\n"),
    ):
        assert run(*argv, *server) == 0, argv
        assert capsys.readouterr().out == line


def test_claiming_from_an_unknown_queue_fails_with_the_servers_message(
    h: Harness, example_policies: Path, capsys
) -> None:
    server = ("--server", f"127.0.0.1:{h.app.port}")
    h.apply(files_of(example_policies))
    assert run("review", "claim", "no-such-queue", *server) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: NOT_FOUND: ") and "no-such-queue" in err


def test_an_unreachable_server_exits_3_not_1() -> None:
    # A port that was just free: nothing listens there, so the call fails as UNAVAILABLE, which
    # a script may retry (a refusal, as in the test above, is status 1).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    unreachable = cli("policy", "history", "--server", f"127.0.0.1:{free}")
    assert unreachable.returncode == 3, unreachable.stderr
    assert unreachable.stderr.startswith("error: UNAVAILABLE: ")
    assert len(unreachable.stderr.strip().splitlines()) == 1
