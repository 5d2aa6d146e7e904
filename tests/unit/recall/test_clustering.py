"""TopIssues clustering on synthetic vectors: grouping, representative, growth, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from feedbackloop.recall.clustering import top_issues


def _blob(rng: np.random.Generator, centre: np.ndarray, n: int, prefix: str) -> list[tuple[str, np.ndarray]]:
    out = []
    for i in range(n):
        v = centre + rng.normal(scale=0.05, size=centre.shape)
        out.append((f"{prefix}{i:03d}", (v / np.linalg.norm(v)).astype(np.float32)))
    return out


@pytest.fixture
def data() -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    rng = np.random.default_rng(3)
    centres = np.eye(16)[:3]
    current = (
        _blob(rng, centres[0], 10, "a") + _blob(rng, centres[1], 5, "b") + _blob(rng, centres[2], 1, "c")
    )
    previous = (
        _blob(rng, centres[0], 2, "pa") + _blob(rng, centres[1], 5, "pb") + _blob(rng, -centres[0], 4, "x")
    )
    return current, previous


def test_groups_sizes_growth_and_representative(data: tuple[list, list]) -> None:
    current, previous = data
    issues = top_issues(current, previous, threshold=0.7)
    assert [i.size for i in issues] == [10, 5, 1]
    assert issues[0].member_ids == tuple(f"a{i:03d}" for i in range(10))
    assert (issues[0].previous_count, issues[0].growth) == (2, 4.0)
    assert (issues[1].previous_count, issues[1].growth) == (5, 0.0)
    assert (issues[2].previous_count, issues[2].growth) == (0, 1.0)
    # The representative is the member closest to the centroid.
    a = np.stack([v for i, v in current if i.startswith("a")])
    centroid = a.sum(axis=0) / np.linalg.norm(a.sum(axis=0))
    assert issues[0].representative_id == f"a{int(np.argmax(a @ centroid)):03d}"
    assert top_issues(current, previous, threshold=0.7, min_size=2, limit=1)[0].size == 10


def test_deterministic_under_input_order(data: tuple[list, list]) -> None:
    current, previous = data
    rng = np.random.default_rng(0)
    baseline = [(i.member_ids, i.representative_id, i.previous_count) for i in top_issues(current, previous)]
    for _ in range(5):
        shuffled = [current[j] for j in rng.permutation(len(current))]
        again = [
            (i.member_ids, i.representative_id, i.previous_count) for i in top_issues(shuffled, previous)
        ]
        assert again == baseline


def test_empty_and_bad_threshold() -> None:
    assert top_issues([]) == []
    with pytest.raises(ValueError):
        top_issues([("a", np.ones(4))], threshold=0)
