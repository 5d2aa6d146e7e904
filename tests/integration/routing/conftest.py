"""A real server (ingestion + routing) on each store backend, with the route stage driven by hand."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from routing_support import Harness

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def example_policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO / "policies", target, ignore=shutil.ignore_patterns("tests", "schema"))
    return target


@pytest.fixture
def make_harness(store_url: str, tmp_path: Path, embedder: Any) -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def start(**overrides: Any) -> Harness:
        harness = Harness.start(store_url, tmp_path / f"data{len(started)}", embedder=embedder, **overrides)
        started.append(harness)
        return harness

    yield start
    for harness in reversed(started):
        harness.close()


@pytest.fixture
def h(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()
