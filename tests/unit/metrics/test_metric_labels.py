"""Label folding: what a client sends becomes a label value only when it is known."""

from __future__ import annotations

import threading

from feedbackloop.metrics.labels import NONE, OTHER, LabelFolder


def folder(max_versions: int = 2) -> LabelFolder:
    categories = {"p1": frozenset({"outdated_info", "unsafe"})}
    prompts = {"p1": frozenset({"support-answer"})}
    return LabelFolder(
        lambda p: categories.get(p, frozenset()), lambda p: prompts.get(p, frozenset()), max_versions
    )


def test_categories_outside_the_applied_schema_are_other() -> None:
    f = folder()
    assert f.category("p1", "unsafe") == "unsafe"
    assert f.category("p1", "made-up") == OTHER
    assert f.category("p2", "unsafe") == OTHER  # another project's schema is not this one's


def test_prompts_outside_the_applied_prompts_are_other_and_so_are_their_versions() -> None:
    f = folder()
    assert f.prompt("p1", "support-answer") == "support-answer"
    assert f.prompt("p1", "someone-elses") == OTHER
    assert f.prompt("p1", "") == NONE
    assert f.prompt_version("p1", OTHER, "7") == OTHER  # no series for an unknown prompt's versions
    assert f.prompt_version("p1", "support-answer", "") == NONE


def test_only_the_first_versions_seen_are_kept_per_prompt_and_per_project() -> None:
    f = folder(max_versions=2)
    assert [f.model_version("p1", v) for v in ("a", "b", "c", "a", "d", "b")] == [
        "a",
        "b",
        OTHER,
        "a",
        OTHER,
        "b",
    ]
    assert f.model_version("p2", "c") == "c"  # each project has its own bound
    assert [f.prompt_version("p1", "support-answer", v) for v in ("1", "2", "3", "1")] == [
        "1",
        "2",
        OTHER,
        "1",
    ]
    assert f.prompt_version("p1", "other-prompt-kept", "3") == "3"  # per prompt
    assert f.model_version("p1", "") == NONE


def test_the_bound_holds_under_concurrent_first_sightings() -> None:
    f = folder(max_versions=5)
    seen: list[str] = []
    lock = threading.Lock()

    def sight(n: int) -> None:
        value = f.model_version("p1", f"v{n}")
        with lock:
            seen.append(value)

    threads = [threading.Thread(target=sight, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({v for v in seen if v != OTHER}) == 5
    assert seen.count(OTHER) == 45


def test_signals_and_sources_outside_the_vocabularies_are_other() -> None:
    assert LabelFolder.signal("thumbs_down") == "thumbs_down"
    assert LabelFolder.signal("telepathy") == OTHER
    assert LabelFolder.source("evaluator") == "evaluator"
    assert LabelFolder.source("robot") == OTHER
