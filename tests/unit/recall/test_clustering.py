"""TopIssues clustering on synthetic vectors: groups, leftovers, growth, sampling, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from feedbackloop.recall import clustering
from feedbackloop.recall.clustering import top_issues

DIM = 32


def _blob(rng: np.random.Generator, centre: np.ndarray, n: int, prefix: str, spread: float = 0.03) -> list:
    out = []
    for i in range(n):
        v = centre + rng.normal(scale=spread, size=centre.shape)
        out.append((f"{prefix}{i:04d}", (v / np.linalg.norm(v)).astype(np.float32)))
    return out


def _window(rng: np.random.Generator, sizes: dict[str, int]) -> list:
    centres = np.eye(DIM)
    items: list = []
    for n, (prefix, size) in enumerate(sizes.items()):
        items += _blob(rng, centres[n], size, prefix)
    return items


def _prefixes(result: clustering.TopIssues) -> list[set[str]]:
    return [{m.rstrip("0123456789") for m in i.member_ids} for i in result.issues]


def test_groups_are_pure_and_a_stray_stays_unclustered() -> None:
    rng = np.random.default_rng(3)
    current = _window(rng, {"a": 40, "b": 25, "c": 15})
    stray = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)  # as far from every blob as any point
    result = top_issues([*current, ("zstray", stray)])
    # A blob of isotropic noise may come out as a few dense pieces, never mixed with another.
    assert all(len(p) == 1 for p in _prefixes(result))
    assert {p for ps in _prefixes(result) for p in ps} == {"a", "b", "c"}
    assert "zstray" in result.unclustered_ids
    assert sum(i.size for i in result.issues) + len(result.unclustered_ids) == 81
    assert result.groups_found == len(result.issues)
    sizes = [i.size for i in result.issues]
    assert sizes == sorted(sizes, reverse=True)
    # The representative is the member closest to the group's centroid.
    for issue in result.issues:
        members = dict(current)
        sims = {m: float(members[m] @ issue.centroid) for m in issue.member_ids}
        assert issue.representative_id == max(sims, key=lambda m: sims[m])


def test_growth_counts_the_previous_window_in_the_same_groups() -> None:
    rng = np.random.default_rng(5)
    current = _window(rng, {"a": 40, "b": 20})
    previous = _blob(rng, np.eye(DIM)[0], 10, "pa", spread=0.01) + _blob(rng, -np.eye(DIM)[0], 7, "px")
    result = top_issues(current, previous)
    of_a = [i for i in result.issues if _prefixes_of(i) == {"a"}]
    of_b = [i for i in result.issues if _prefixes_of(i) == {"b"}]
    assert sum(i.previous_count for i in of_a) == 10  # px fits no group: not counted anywhere
    assert sum(i.previous_count for i in of_b) == 0
    for issue in result.issues:
        assert issue.growth == (issue.size - issue.previous_count) / max(issue.previous_count, 1)


def _prefixes_of(issue: clustering.Issue) -> set[str]:
    return {m.rstrip("0123456789") for m in issue.member_ids}


def test_the_same_input_in_any_order_gives_the_same_groups() -> None:
    rng = np.random.default_rng(0)
    current = _window(rng, {"a": 30, "b": 30, "c": 12})
    baseline = [(i.member_ids, i.representative_id) for i in top_issues(current).issues]
    for _ in range(3):
        shuffled = [current[j] for j in rng.permutation(len(current))]
        assert [(i.member_ids, i.representative_id) for i in top_issues(shuffled).issues] == baseline


def test_a_window_larger_than_the_sample_is_clustered_on_a_sample_and_assigned() -> None:
    rng = np.random.default_rng(1)
    current = _window(rng, {"a": 600, "b": 300, "c": 100})
    result = top_issues(current, sample_size=200)
    assert result.sample_size == 200
    assert all(len(p) == 1 for p in _prefixes(result))
    assert sum(len(i.sample_member_ids) for i in result.issues) <= 200
    # Most of the window joined a group without being clustered itself (a structureless blob
    # comes out as several pieces, each with its own bound, so not all of it).
    assert sum(i.size for i in result.issues) >= 500


def test_a_floor_on_similarity_leaves_loose_members_out() -> None:
    rng = np.random.default_rng(2)
    tight = _blob(rng, np.eye(DIM)[0], 30, "a", spread=0.02)
    loose = _blob(rng, np.eye(DIM)[0], 10, "l", spread=0.12)
    vectors = dict(tight + loose)
    unfloored = top_issues(tight + loose)
    assert all(m.startswith("l") for m in unfloored.unclustered_ids)  # the data's own bound
    floor = 0.995
    floored = top_issues(tight + loose, min_similarity=floor)
    assert len(floored.unclustered_ids) > len(unfloored.unclustered_ids)
    for issue in floored.issues:
        assert all(float(vectors[m] @ issue.centroid) >= floor for m in issue.member_ids)


def test_every_complaint_alike_is_one_group() -> None:
    rng = np.random.default_rng(4)
    result = top_issues(_blob(rng, np.eye(DIM)[0], 3, "a"))
    assert [i.size for i in result.issues] == [3]


def test_limits_and_bad_input() -> None:
    rng = np.random.default_rng(6)
    current = _window(rng, {"a": 40, "b": 25, "c": 15})
    everything = top_issues(current).issues
    cut = top_issues(current, min_size=everything[1].size, limit=1).issues
    assert [i.member_ids for i in cut] == [everything[0].member_ids]
    assert top_issues([]).issues == []
    with pytest.raises(ValueError):
        top_issues(current, min_similarity=1.5)


def test_parameters_follow_the_window_size() -> None:
    assert clustering.min_cluster_size(96) == 3
    assert clustering.min_cluster_size(1000) == 5
    assert clustering.dimensions(96) == 10
    assert clustering.dimensions(1000) == clustering.MAX_DIMENSIONS
