"""TopIssues: group semantically similar negative feedback of a window, and measure each group's growth.

Algorithm (deterministic, NumPy only): items are sorted by id, then a leader clustering pass
assigns each item to the most similar existing group centroid if cosine >= threshold, otherwise
starts a new group; then up to two reassignment passes against the centroids (k-means style) so
the result does not depend on which item happened to lead. Ties are broken by group order,
which follows id order, so the same input always gives the same groups.

Growth: each item of the previous window (same length, just before) is assigned to the nearest
current centroid if cosine >= threshold; a group's `previous` is how many landed in it, and
`growth = (current - previous) / max(previous, 1)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Tuned on tests/testdata/recall/labeled_feedback.yaml with all-MiniLM-L6-v2: 0.35 keeps the
# largest groups >= 75% pure while holding ~70% of a cause together; higher splits causes apart.
DEFAULT_THRESHOLD = 0.35


@dataclass(frozen=True)
class Issue:
    """One group of similar feedback."""

    representative_id: str  # the member closest to the centroid
    member_ids: tuple[str, ...]  # sorted
    size: int
    previous_count: int
    growth: float
    centroid: np.ndarray


def _matrix(items: Sequence[tuple[str, np.ndarray]]) -> tuple[list[str], np.ndarray]:
    ordered = sorted(items, key=lambda item: item[0])
    ids = [i for i, _ in ordered]
    if not ordered:
        return ids, np.zeros((0, 0), dtype=np.float32)
    vectors = np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for _, v in ordered])
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return ids, vectors / np.where(norms == 0, 1.0, norms)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _centroids(vectors: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((k, vectors.shape[1]), dtype=np.float32)
    np.add.at(out, labels, vectors)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


def cluster(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Group labels for unit row vectors (labels numbered by first appearance)."""
    n = vectors.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sums: list[np.ndarray] = []
    labels = np.empty(n, dtype=np.int64)
    cents = np.zeros((0, vectors.shape[1]), dtype=np.float32)
    for i in range(n):
        if len(sums):
            sims = cents @ vectors[i]
            best = int(np.argmax(sims))  # argmax takes the first max: deterministic ties
            if sims[best] >= threshold:
                labels[i] = best
                sums[best] = sums[best] + vectors[i]
                cents[best] = _unit(sums[best])
                continue
        labels[i] = len(sums)
        sums.append(vectors[i].copy())
        cents = np.vstack([cents, vectors[i][None, :]])
    # Up to two refinement passes: an early item may sit closer to a centroid that formed later.
    for _ in range(2):
        cents = _centroids(vectors, labels, int(labels.max()) + 1)
        sims = vectors @ cents.T
        new = np.argmax(sims, axis=1)
        # Keep an item where it is if it fits nowhere above the threshold.
        keep = sims[np.arange(n), new] < threshold
        new[keep] = labels[keep]
        if np.array_equal(new, labels):
            break
        labels = new
    # Renumber densely by first appearance so empty groups vanish and numbering is stable.
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first, kind="stable")
    remap = np.empty(int(labels.max()) + 1, dtype=np.int64)
    remap[np.unique(labels)[order]] = np.arange(len(order))
    return remap[labels]


def top_issues(
    current: Sequence[tuple[str, np.ndarray]],
    previous: Sequence[tuple[str, np.ndarray]] = (),
    threshold: float = DEFAULT_THRESHOLD,
    min_size: int = 1,
    limit: int | None = None,
) -> list[Issue]:
    """Groups of `current` (feedback id, vector) pairs, largest first (ties: fastest growing, then id).

    `previous` holds the window of the same length just before; it only counts toward growth.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    ids, vectors = _matrix(current)
    if not ids:
        return []
    labels = cluster(vectors, threshold)
    k = int(labels.max()) + 1
    cents = _centroids(vectors, labels, k)
    prev_counts = np.zeros(k, dtype=np.int64)
    _, prev_vectors = _matrix(previous)
    if prev_vectors.shape[0]:
        sims = prev_vectors @ cents.T
        best = np.argmax(sims, axis=1)
        hit = sims[np.arange(len(best)), best] >= threshold
        np.add.at(prev_counts, best[hit], 1)
    issues: list[Issue] = []
    for g in range(k):
        members = np.flatnonzero(labels == g)
        if len(members) < min_size:
            continue
        rep = members[int(np.argmax(vectors[members] @ cents[g]))]
        size, prev = len(members), int(prev_counts[g])
        issues.append(
            Issue(
                representative_id=ids[rep],
                member_ids=tuple(ids[m] for m in members),
                size=size,
                previous_count=prev,
                growth=(size - prev) / max(prev, 1),
                centroid=cents[g],
            )
        )
    issues.sort(key=lambda i: (-i.size, -i.growth, i.representative_id))
    return issues[:limit] if limit is not None else issues
