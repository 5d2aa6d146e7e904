"""Recall quality on hand-labeled feedback (tests/testdata/recall/labeled_feedback.yaml).

For every text, the majority of its top-5 neighbours (itself excluded) must share its cause,
searched through the real path: each text as the pipeline embeds a thumbs-down with that comment
(recall.text) -> bundled model -> FeedbackIndex (Milvus Lite) -> search. The fractions are
printed and recorded with `record_property` (they land in --junitxml output).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from feedbackloop.recall.embedder import Embedder
from feedbackloop.recall.index import FeedbackIndex, IndexRow
from feedbackloop.recall.text import feedback_text
from feedbackloop.store.models import Feedback

DATA = Path(__file__).resolve().parents[2] / "testdata" / "recall" / "labeled_feedback.yaml"
K = 5


def _load() -> list[tuple[str, str, str]]:
    causes = yaml.safe_load(DATA.read_text(encoding="utf-8"))["causes"]
    return [
        (f"{cause}_{i:02d}", cause, text) for cause, texts in causes.items() for i, text in enumerate(texts)
    ]


def _as_indexed(comment: str) -> str:
    """The text the pipeline embeds for a thumbs-down carrying this comment (recall.text)."""
    return feedback_text(
        Feedback(id="fb", thumb="down", comment=comment, correction="", implicit_text=""), None
    )


@pytest.fixture(scope="module")
def labeled(embedder: Embedder) -> tuple[list[tuple[str, str, str]], object]:
    items = _load()
    return items, embedder.encode([_as_indexed(text) for _, _, text in items])


def test_labeled_data_shape() -> None:
    items = _load()
    counts = Counter(cause for _, cause, _ in items)
    assert len(counts) == 8 and all(n >= 10 for n in counts.values())
    assert len({text.lower() for _, _, text in items}) == len(items)


def test_top5_neighbours_share_the_cause(
    labeled: tuple[list[tuple[str, str, str]], object],
    index: FeedbackIndex,
    record_property: pytest.RecordProperty,
) -> None:
    items, vectors = labeled
    cause_of = {fid: cause for fid, cause, _ in items}
    index.ensure_collection(vectors.shape[1])  # type: ignore[attr-defined]
    index.upsert([IndexRow(id=fid, project_id="q", vector=vectors[n]) for n, (fid, _, _) in enumerate(items)])
    per_cause: dict[str, list[float]] = {}
    majority_ok: dict[str, list[bool]] = {}
    for n, (fid, cause, _) in enumerate(items):
        hits = index.search("q", vectors[n], top_k=K, exclude_ids=[fid])
        assert len(hits) == K
        same = sum(cause_of[h] == cause for h, _ in hits)
        per_cause.setdefault(cause, []).append(same / K)
        majority_ok.setdefault(cause, []).append(same > K // 2)
    overall = sum(sum(v) for v in per_cause.values()) / len(items)
    majority = sum(sum(v) for v in majority_ok.values()) / len(items)
    print(
        f"\nrecall quality: neighbour precision@{K} {overall:.3f}, texts with same-cause majority {majority:.3f}"
    )
    record_property("neighbour_precision_at_5", round(overall, 4))
    record_property("same_cause_majority_fraction", round(majority, 4))
    for cause in sorted(per_cause):
        p = sum(per_cause[cause]) / len(per_cause[cause])
        m = sum(majority_ok[cause]) / len(majority_ok[cause])
        print(f"  {cause:<24} precision@5 {p:.3f}  majority {m:.3f}")
        record_property(f"precision_at_5.{cause}", round(p, 4))
    # Bars set just under what all-MiniLM-L6-v2 measures here (0.833 overall; the weakest cause,
    # hallucinated_api, 0.5): a regression in text, model or index shows up, noise does not.
    assert majority >= 0.8, f"only {majority:.0%} of texts have a same-cause majority"
    for cause, oks in majority_ok.items():
        assert sum(oks) / len(oks) >= 0.5, f"{cause}: {sum(oks)}/{len(oks)} texts with same-cause majority"
