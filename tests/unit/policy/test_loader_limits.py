"""Loading refuses what would exhaust time, memory or the stack, as file:line:col errors."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from feedbackloop.cli import main
from feedbackloop.policy.loader import MAX_DEPTH, MAX_FILE_BYTES, MAX_SET_BYTES, load_path, load_text
from feedbackloop.policy.validate import validate_dir, validate_texts

from .conftest import BAD, REPO_ROOT

QUEUE = "apiVersion: feedbackloop/v1\nkind: ReviewQueue\nmetadata: {name: q}\nspec: {sla: 1h}\n"


def test_a_50_mb_file_is_refused_from_its_size_without_being_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as handle:  # sparse: 50 MB on paper, nothing written
        handle.truncate(50 * 1024 * 1024)
    started = time.perf_counter()
    docs, errors = load_path(huge)
    assert time.perf_counter() - started < 1.0  # generous: reading and parsing took 12.7 s
    assert docs == []
    assert [str(e) for e in errors] == [
        f"{huge}:1:1: file is 52,428,800 bytes; the limit for a policy file is 1,048,576"
    ]


def test_a_file_just_within_the_limit_loads(tmp_path: Path) -> None:
    text = QUEUE + "#" * (MAX_FILE_BYTES - len(QUEUE) - 1) + "\n"
    assert len(text) == MAX_FILE_BYTES
    docs, errors = load_text(text, "edge.yaml")
    assert errors == [] and len(docs) == 1
    _, errors = load_text(text + "\n", "edge.yaml")
    assert [str(e) for e in errors] == [
        "edge.yaml:1:1: file is 1,048,577 bytes; the limit for a policy file is 1,048,576"
    ]


def test_the_file_limit_counts_bytes_not_characters() -> None:
    text = QUEUE + "# " + "é" * (MAX_FILE_BYTES // 2) + "\n"  # 2 bytes a character
    _, errors = load_text(text, "wide.yaml")
    assert len(text) < MAX_FILE_BYTES
    assert [e.message for e in errors] == [
        f"file is {len(text.encode()):,} bytes; the limit for a policy file is 1,048,576"
    ]


def _filler(n: int) -> str:
    body = QUEUE.replace("name: q", f"name: q{n}")
    return body + "#" * (900 * 1024 - len(body)) + "\n"


def test_a_set_over_its_limit_is_refused_before_any_file_is_parsed(tmp_path: Path) -> None:
    for n in range(6):  # 6 x 900 KiB: the total passes 4 MiB at the fifth
        (tmp_path / f"p{n}.yaml").write_text(_filler(n))
    (tmp_path / "p0.yaml").write_text(_filler(0).replace("spec: {", "spec: [", 1))  # never parsed
    started = time.perf_counter()
    policy_set, errors = validate_dir(tmp_path)
    assert time.perf_counter() - started < 1.0  # parsing them would take seconds
    assert policy_set is None
    assert [str(e) for e in errors] == [
        f"{tmp_path / 'p4.yaml'}:1:1: the policy set is 5,529,606 bytes; the limit for a set is "
        f"{MAX_SET_BYTES:,} (the total passes it at this file; nothing was parsed)"
    ]
    # The same set sent as texts (the server's path) gets the same answer.
    _, remote = validate_texts((f"p{n}.yaml", _filler(n)) for n in range(6))
    assert [str(e) for e in remote] == [
        "p4.yaml:1:1: the policy set is 5,529,606 bytes; the limit for a set is 4,194,304 "
        "(the total passes it at this file; nothing was parsed)"
    ]


@pytest.mark.parametrize("nesting", ["block", "flow"])
def test_deep_nesting_is_an_error_at_the_node_never_a_recursion_error(nesting: str) -> None:
    if nesting == "flow":
        text = "a: " + "[" * 2000 + "]" * 2000 + "\n"
        where = "1:35"
    else:
        text = "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n"
        where = f"{MAX_DEPTH}:{2 * MAX_DEPTH - 1}"  # the 33rd mapping: the value of k30
    docs, errors = load_text(text, "deep.yaml")
    assert docs == []
    assert [str(e) for e in errors] == [f"deep.yaml:{where}: YAML nests deeper than 32 levels"]


def test_nesting_up_to_the_limit_loads() -> None:
    depth = MAX_DEPTH - 1  # the document's own mapping is the first level
    docs, errors = load_text("a: " + "[" * depth + "]" * depth + "\n", "ok.yaml")
    assert errors == [] and len(docs) == 1


def test_any_alias_is_refused_before_it_is_expanded() -> None:
    started = time.perf_counter()
    docs, errors = load_text((BAD / "yaml_alias_bomb.yaml").read_text(), "bomb.yaml")
    assert time.perf_counter() - started < 1.0  # generous: it took 19.6 s to load
    assert docs == []
    assert [str(e) for e in errors] == [
        "bomb.yaml:5:8: YAML aliases (*a) are not allowed in policy files; write the value out"
    ]
    _, errors = load_text("a: &x 1\nb: *x\n", "one.yaml")
    assert [str(e) for e in errors] == [
        "one.yaml:2:4: YAML aliases (*x) are not allowed in policy files; write the value out"
    ]
    _, errors = load_text("a: &x [*x]\n", "cycle.yaml")
    assert [e.message for e in errors] == [
        "YAML aliases (*x) are not allowed in policy files; write the value out"
    ]


def test_an_anchor_without_an_alias_is_harmless() -> None:
    docs, errors = load_text(QUEUE.replace("spec:", "spec: &s"), "anchor.yaml")
    assert errors == [] and docs[0].data["spec"] == {"sla": "1h"}


@pytest.mark.parametrize("case", ["yaml_deep_nesting", "yaml_alias_bomb", "cel_cost_nested_comprehensions"])
def test_the_cli_prints_one_line_and_no_traceback(
    case: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT)
    rel = f"tests/testdata/policies/bad/{case}.yaml"
    assert main(["policy", "validate", rel]) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{rel}:") and lines[1] == "1 error(s)"
    assert "Traceback" not in captured.err and captured.out == ""


def test_the_cli_process_exits_cleanly_on_a_huge_file(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    done = subprocess.run(
        [sys.executable, "-m", "feedbackloop.cli", "policy", "validate", str(huge)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{huge}:1:1: file is 52,428,800 bytes; the limit for a policy file is 1,048,576",
        "1 error(s)",
    ]
