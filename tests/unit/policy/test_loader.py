from __future__ import annotations

from pathlib import Path

from feedbackloop.policy.loader import Mark, iter_policy_files, load_path, load_text

TEXT = """\
apiVersion: feedbackloop/v1
kind: ReviewQueue
metadata:
  name: q1
spec:
  sla: 24h
---
# a comment
kind: Dataset
spec:
  formats:
    - plain
    - openai_chat
---
"""


def test_positions_are_recorded_per_node_and_document() -> None:
    docs, errors = load_text(TEXT, "x.yaml")
    assert errors == []
    assert len(docs) == 2  # the trailing empty document is skipped, not an error
    first, second = docs
    assert first.data["spec"] == {"sla": "24h"}
    assert first.mark(("spec", "sla")) == Mark(6, 8)
    assert first.mark(("spec", "sla"), key=True) == Mark(6, 3)
    assert second.mark(("spec", "formats", 1)) == Mark(13, 7)
    # A path that does not exist falls back to its nearest ancestor.
    assert second.mark(("spec", "formats", 7, "x")) == Mark(12, 5)
    assert str(second.error(("spec", "nope"), "boom")) == "x.yaml:11:3: spec.nope: boom"


def test_duplicate_keys_are_errors_not_silently_overwritten() -> None:
    _, errors = load_text("a: 1\nb:\n  c: 1\n  c: 2\n", "d.yaml")
    assert [str(e) for e in errors] == ['d.yaml:4:3: b.c: duplicate key "c" (first at line 3)']


def test_yaml_syntax_error_has_line_and_column() -> None:
    docs, errors = load_text("a: 1\nb: c: d\n", "s.yaml")
    assert docs == []
    assert [str(e) for e in errors] == ["s.yaml:2:5: YAML syntax error: mapping values are not allowed here"]


def test_directory_walk_is_sorted_recursive_and_skips_tests(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "tests" / "case").mkdir(parents=True)
    for rel in ("b.yaml", "a.yml", "sub/c.yaml", "tests/case/case.yaml", "notes.txt"):
        (tmp_path / rel).write_text("kind: Dataset\n")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_policy_files(tmp_path)]
    assert found == ["a.yml", "b.yaml", "sub/c.yaml"]


def test_a_configmap_mounted_as_a_directory_is_read_once(tmp_path: Path) -> None:
    # The kubelet's layout: the data lives in `..<timestamp>/`, `..data` links to it, and each
    # key is a link `x.yaml -> ..data/x.yaml`.
    stamped = tmp_path / "..2026_12_02_15_00_00.123"
    stamped.mkdir()
    (stamped / "routing.yaml").write_text("kind: Dataset\n")
    (tmp_path / "..data").symlink_to(stamped.name)
    (tmp_path / "routing.yaml").symlink_to("..data/routing.yaml")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_policy_files(tmp_path)]
    assert found == ["routing.yaml"]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    docs, errors = load_path(tmp_path / "nope")
    assert docs == []
    assert [e.message for e in errors] == ["no such file or directory"]
