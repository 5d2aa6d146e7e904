"""The taxonomy re-reads a project's applied schema once its copy is older than its max age."""

from __future__ import annotations

import logging

import pytest

from feedbackloop.ingestion.taxonomy import DEFAULT_CATEGORIES, Taxonomy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stale_copy_is_re_read_once_per_interval() -> None:
    clock = Clock()
    taxonomy = Taxonomy(max_age_seconds=5, clock=clock)
    live = {"p": frozenset({"a"})}
    reads: list[str] = []

    def source(project: str) -> None:
        reads.append(project)
        taxonomy.install(project, live.get(project))

    taxonomy.follow(source)
    assert taxonomy.categories_for("p") == {"a"} and reads == ["p"]
    live["p"] = frozenset({"a", "b"})  # applied elsewhere
    clock.now += 4.9
    assert taxonomy.categories_for("p") == {"a"} and reads == ["p"]
    clock.now += 0.2
    assert taxonomy.categories_for("p") == {"a", "b"} and reads == ["p", "p"]
    assert taxonomy.categories_for("other") == DEFAULT_CATEGORIES and reads == ["p", "p", "other"]


def test_an_install_counts_as_fresh() -> None:
    clock = Clock()
    taxonomy = Taxonomy(max_age_seconds=5, clock=clock)
    reads: list[str] = []
    taxonomy.follow(reads.append)
    taxonomy.install("p", frozenset({"x"}))  # an apply in this process
    assert taxonomy.categories_for("p") == {"x"} and reads == []


def test_a_failing_re_read_keeps_the_copy(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    taxonomy = Taxonomy(max_age_seconds=5, clock=clock)
    taxonomy.install("p", frozenset({"x"}))

    def broken(project: str) -> None:
        raise OSError("database is gone")

    taxonomy.follow(broken)
    clock.now += 10
    with caplog.at_level(logging.WARNING):
        assert taxonomy.categories_for("p") == {"x"}
    assert "could not re-read the feedback schema of project p: database is gone" in caplog.text
