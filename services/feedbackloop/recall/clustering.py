"""TopIssues: group the negative feedback of a window by meaning, and count each group's growth.

The pipeline follows BERTopic's design for short texts (embed -> reduce on a neighbour graph ->
density clustering -> class-based TF-IDF labels, the last in `recall.topics`), with library parts:

1. **Sample.** At most `SAMPLE_SIZE` vectors are clustered. Which ones is decided by a hash of
   each feedback id, so the choice does not depend on input order and a feedback picked in one
   window is picked in the next. Everything outside the sample is assigned in step 5.
2. **Reduce.** A Laplacian eigenmap of the cosine k-nearest-neighbour graph (the spectral
   embedding UMAP starts from; UMAP itself is not a dependency here): `round(sqrt(n))`
   dimensions, 5 to 24. Density clustering straight on 384-d MiniLM vectors finds almost
   nothing on one product's feedback (every complaint is near every other: the issue's real
   data came back as two groups); on the neighbour graph the distinct complaints separate.
3. **Cluster.** scikit-learn's `HDBSCAN` (min cluster size `round(sqrt(n) / 6)`, at least 3).
   There is no similarity threshold: density decides, per data set, where groups are.
4. **Leftovers.** Each group's bound is the lower Tukey fence (Q1 - 1.5 IQR) of its members'
   cosine to its centroid, in the original space, capped by the median group's bound (a core of
   a few near-identical texts would otherwise take nothing more). HDBSCAN's members below it
   leave the group; points HDBSCAN left unlabeled join their most similar centroid when above
   that group's bound, as BERTopic's outlier reduction does. What stays is reported as
   unclustered, never forced into a group.
5. **Assign the rest.** Feedback outside the sample goes to its most similar centroid under the
   same per-group bound, or stays unclustered. A window of 100,000 costs one sample clustering
   plus one (n x groups) product.

Parameters were chosen on tests/testdata/recall/invoicing_feedback.yaml and checked on
labeled_feedback.yaml (tests/unit/recall/test_top_issues_quality.py prints the figures).

Growth: the previous window's feedback is assigned to the current groups the same way (bound
included); a group's `previous_count` is how many landed in it.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.linalg import eigsh
from sklearn.cluster import HDBSCAN

SAMPLE_SIZE = 1000
NEIGHBOURS = 12
MIN_DIMENSIONS = 5
MAX_DIMENSIONS = 24
MIN_CLUSTER_DIVISOR = 6
MIN_CLUSTER_SIZE = 3
# Below this many vectors the graph is too small to embed: HDBSCAN runs on the vectors directly.
MIN_FOR_EMBEDDING = 30


@dataclass(frozen=True)
class Grouping:
    """Group labels of every input row (-1: unclustered), and each group's centroid and bound."""

    labels: np.ndarray
    centroids: np.ndarray
    bounds: np.ndarray
    sample_size: int

    @property
    def count(self) -> int:
        return int(self.centroids.shape[0])

    def assign(self, vectors: np.ndarray, floor: float = 0.0) -> np.ndarray:
        """The group of each unit row vector, or -1 where it is below that group's bound."""
        return assign(vectors, self.centroids, np.maximum(self.bounds, floor))


@dataclass(frozen=True)
class Issue:
    """One group of similar feedback."""

    representative_id: str  # the member closest to the centroid
    member_ids: tuple[str, ...]  # sorted
    size: int
    previous_count: int
    growth: float
    centroid: np.ndarray
    sample_member_ids: tuple[str, ...] = ()  # the members that were clustered (for labels)


@dataclass(frozen=True)
class TopIssues:
    """The groups of a window (largest first), and what no group took."""

    issues: list[Issue]
    unclustered_ids: tuple[str, ...] = ()
    groups_found: int = 0
    sample_size: int = 0


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.array(vectors, dtype=np.float32)  # a copy: the caller's rows stay as they were
    # einsum, not linalg.norm: a third of the time on a (100k x 384) window.
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    vectors /= np.where(norms == 0, 1.0, norms)
    return vectors


def _matrix(items: Sequence[tuple[str, np.ndarray]]) -> tuple[list[str], np.ndarray]:
    if not items:
        return [], np.zeros((0, 0), dtype=np.float32)
    order = sorted(range(len(items)), key=lambda n: items[n][0])
    ids = [items[n][0] for n in order]
    return ids, unit_rows(np.stack([np.asarray(items[n][1], dtype=np.float32) for n in order]))


def sample_order(ids: Sequence[str]) -> np.ndarray:
    """Row indices ordered by a hash of the id: the first `k` are the sample of size k."""
    keys = np.array(
        [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big") for i in ids],
        dtype=np.uint64,
    )
    return np.argsort(keys, kind="stable")


def min_cluster_size(n: int) -> int:
    return max(MIN_CLUSTER_SIZE, round(math.sqrt(n) / MIN_CLUSTER_DIVISOR))


def dimensions(n: int) -> int:
    return min(MAX_DIMENSIONS, max(MIN_DIMENSIONS, round(math.sqrt(n))))


def spectral_embedding(vectors: np.ndarray, n_components: int, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Laplacian eigenmap of the symmetric cosine kNN graph of unit row vectors.

    The top eigenvectors of the normalized adjacency D^-1/2 A D^-1/2 (the bottom ones of the
    normalized Laplacian), found by Lanczos (`which="LA"` converges in a few iterations where
    the Laplacian's smallest ones would need shift-invert), scaled back by D^-1/2; the trivial
    first one is dropped.
    """
    n = vectors.shape[0]
    k = min(neighbours, n - 1)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    knn = sparse.csr_matrix((np.ones(n * k), (rows, nearest.ravel())), shape=(n, n))
    adjacency = 0.5 * (knn + knn.T)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    scale = sparse.diags(1.0 / np.sqrt(degree))
    normalized = scale @ adjacency @ scale
    count = min(n_components + 1, n - 2)
    # A fixed start vector makes Lanczos, and so the grouping, deterministic.
    values, vecs = eigsh(normalized, k=count, which="LA", v0=np.sqrt(degree / degree.sum()))
    order = np.argsort(-values, kind="stable")
    embedding = scale @ vecs[:, order]
    return np.asarray(embedding[:, 1:], dtype=np.float64)


def assign(vectors: np.ndarray, centroids: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    if vectors.shape[0] == 0 or centroids.shape[0] == 0:
        return np.full(vectors.shape[0], -1, dtype=np.int64)
    out = np.empty(vectors.shape[0], dtype=np.int64)
    # In chunks: a (100k x groups) float32 product is fine, a (100k x 384) copy per step is not.
    for start in range(0, vectors.shape[0], 16_384):
        sims = vectors[start : start + 16_384] @ centroids.T
        best = np.argmax(sims, axis=1)
        fits = sims[np.arange(len(best)), best] >= bounds[best]
        out[start : start + 16_384] = np.where(fits, best, -1)
    return out


def _centroids(vectors: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    sums = np.zeros((k, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[labels >= 0], vectors[labels >= 0])
    return unit_rows(sums)


def cluster_sample(vectors: np.ndarray) -> np.ndarray:
    """HDBSCAN labels (-1: noise) for unit row vectors, on their spectral embedding."""
    n = vectors.shape[0]
    if n < MIN_CLUSTER_SIZE:
        return np.full(n, -1, dtype=np.int64)
    points = (
        spectral_embedding(vectors, dimensions(n)) if n >= MIN_FOR_EMBEDDING else vectors.astype(np.float64)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the `copy` default changing; we pass our own array
        labels = HDBSCAN(min_cluster_size=min_cluster_size(n), min_samples=2, copy=True).fit_predict(points)
        if labels.max() < 0:
            # HDBSCAN never calls everything one group unless asked; a window where every
            # complaint is alike (three users on one price) is that one group.
            labels = HDBSCAN(
                min_cluster_size=min_cluster_size(n), min_samples=2, copy=True, allow_single_cluster=True
            ).fit_predict(points)
    return np.asarray(labels, dtype=np.int64)


def group(vectors: np.ndarray, order: np.ndarray | None = None, sample_size: int = SAMPLE_SIZE) -> Grouping:
    """Group unit row vectors (see the module docstring); `order` is `sample_order` of their ids."""
    n = vectors.shape[0]
    if order is None:
        order = np.arange(n)
    sample = np.sort(order[:sample_size])
    core = cluster_sample(vectors[sample])
    k = int(core.max()) + 1 if core.size else 0
    if k == 0:
        return Grouping(
            np.full(n, -1, dtype=np.int64),
            np.zeros((0, vectors.shape[1]), np.float32),
            np.zeros(0),
            len(sample),
        )
    cents = _centroids(vectors[sample], core, k)
    own = np.full(len(sample), np.nan)
    own[core >= 0] = np.einsum("ij,ij->i", vectors[sample][core >= 0], cents[core[core >= 0]])
    # Each group's bound is the lower Tukey fence (Q1 - 1.5 IQR) of its members' similarity to
    # its centroid, in the original space. The neighbour graph links every point to its nearest
    # neighbours, so a point near nothing can land inside a dense region there; below the fence
    # it leaves the group.
    bounds = np.zeros(k)
    for g in range(k):
        sims = own[core == g]
        q1, q3 = np.percentile(sims, [25, 75])
        bounds[g] = q1 - 1.5 * (q3 - q1)
    core = np.where((core >= 0) & (own >= bounds[np.maximum(core, 0)]), core, -1)
    # A core of a few points near its centroid sets a bound no looser member could pass; the
    # typical group's bound caps it (the median over the groups, so it still comes from the data).
    # Less a rounding margin: the least similar member itself must pass when recomputed.
    bounds = np.minimum(bounds, np.median(bounds)) - 1e-5
    labels = assign(vectors, cents, bounds)
    # The sample's core members keep HDBSCAN's group (a core point may be nearer another centroid).
    labels[sample[core >= 0]] = core[core >= 0]
    return Grouping(labels, cents, bounds, len(sample))


def top_issues(
    current: Sequence[tuple[str, np.ndarray]],
    previous: Sequence[tuple[str, np.ndarray]] = (),
    min_similarity: float = 0.0,
    min_size: int = 1,
    limit: int | None = None,
    sample_size: int = SAMPLE_SIZE,
) -> TopIssues:
    """Groups of `current` (feedback id, vector) pairs, largest first (ties: fastest growing, then id).

    `previous` holds the window of the same length just before; it only counts toward growth.
    `min_similarity` > 0 raises every group's bound to at least that cosine to its centroid.
    """
    if not 0.0 <= min_similarity <= 1.0:
        raise ValueError("min_similarity must be in [0, 1]")
    ids, vectors = _matrix(current)
    if not ids:
        return TopIssues([])
    order = sample_order(ids)
    grouping = group(vectors, order, sample_size)
    labels = grouping.labels
    if min_similarity > 0 and grouping.count:
        own = np.einsum("ij,ij->i", vectors, grouping.centroids[np.maximum(labels, 0)])
        labels = np.where((labels >= 0) & (own >= min_similarity), labels, -1)
    k = grouping.count
    prev_counts = np.zeros(k, dtype=np.int64)
    _, prev_vectors = _matrix(previous)
    if prev_vectors.shape[0] and k:
        prev_labels = grouping.assign(prev_vectors, min_similarity)
        np.add.at(prev_counts, prev_labels[prev_labels >= 0], 1)
    in_sample = np.zeros(len(ids), dtype=bool)
    in_sample[order[:sample_size]] = True
    issues: list[Issue] = []
    for g in range(k):
        members = np.flatnonzero(labels == g)
        if len(members) < max(min_size, 1):
            continue
        rep = members[int(np.argmax(vectors[members] @ grouping.centroids[g]))]
        size, prev = len(members), int(prev_counts[g])
        issues.append(
            Issue(
                representative_id=ids[rep],
                member_ids=tuple(ids[m] for m in members),
                size=size,
                previous_count=prev,
                growth=(size - prev) / max(prev, 1),
                centroid=grouping.centroids[g],
                sample_member_ids=tuple(ids[m] for m in members if in_sample[m]),
            )
        )
    issues.sort(key=lambda i: (-i.size, -i.growth, i.representative_id))
    found = sum(1 for g in range(k) if np.any(labels == g))
    unclustered = tuple(ids[m] for m in np.flatnonzero(labels < 0))
    return TopIssues(
        issues[:limit] if limit is not None else issues,
        unclustered_ids=unclustered,
        groups_found=found,
        sample_size=grouping.sample_size,
    )
