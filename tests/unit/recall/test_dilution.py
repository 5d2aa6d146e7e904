"""No dilution: SearchSimilar finds neighbours as good as the bare model's on the users' own words.

For every labeled set in tests/testdata/recall/ (`causes:` -> texts), each text becomes the
comment of a thumbs-down whose interaction's user question is (a) the same generic opening line
for every text, or (b) one of a few generic questions drawn at random, unrelated to the cause.
The feedback is stored in SQLite, indexed by the pipeline's own call (`Recall.index_feedback`:
the embedded texts, the bundled model, Milvus Lite) and searched through `Recall.similar`, the
servicer's call, by feedback id and by the raw text. Neighbour precision@5 (the share of the 5
nearest others with the same cause) and the same-cause majority (texts whose 5 nearest are
mostly their own cause) must come within 0.5 points of the bare model's exact search on the raw
texts. The one-string text of the earlier layout (comment, then `Question: <question>`) is
measured beside them, to show what the separate fields are for. Figures and the model name are
printed and recorded with `record_property`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import insert

from feedbackloop.config import Settings
from feedbackloop.recall.embedder import Embedder
from feedbackloop.recall.service import MODE_FEEDBACK, MODE_QUESTION, Recall
from feedbackloop.store.db import Database
from feedbackloop.store.keys import ensure_project
from feedbackloop.store.models import Feedback, Interaction, utcnow

DATA = Path(__file__).resolve().parents[2] / "testdata" / "recall"
K = 5
TOLERANCE = 0.005  # half a point
OPENING = "Hi, I have a question about my account."
GENERIC = (
    OPENING,
    "Hello, can you help me?",
    "I need some help with something",
    "hey there",
    "Can I ask you something about my subscription?",
    "Good morning, I have a problem",
)


def _sets() -> list[tuple[str, list[tuple[str, str]]]]:
    found = []
    for path in sorted(DATA.glob("*.yaml")):
        causes = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("causes")
        if isinstance(causes, dict):
            found.append((path.stem, [(cause, text) for cause, texts in causes.items() for text in texts]))
    return found


@dataclass(frozen=True)
class Quality:
    precision: float  # neighbour precision@5
    majority: float  # texts with a same-cause majority among their 5 neighbours

    def __str__(self) -> str:
        return f"precision@5 {self.precision:.4f}, majority {self.majority:.4f}"


def _quality(causes: list[str], neighbours: list[list[int]]) -> Quality:
    same = [sum(causes[j] == causes[i] for j in near[:K]) for i, near in enumerate(neighbours)]
    assert all(len(near) >= K for near in neighbours)
    return Quality(sum(same) / (K * len(same)), sum(s > K // 2 for s in same) / len(same))


def _exact(vectors: np.ndarray) -> list[list[int]]:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return [list(np.argsort(-row, kind="stable")[:K]) for row in sims]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[dict[str, Recall]]:
    opened: dict[str, Recall] = {}
    databases = []
    for variant in ("opening", "varied"):
        data_dir = tmp_path_factory.mktemp(f"dilution-{variant}")
        settings = Settings(data_dir=data_dir, policies_dir=None)
        db = Database(settings.effective_database_url)
        db.upgrade()
        databases.append(db)
        opened[variant] = Recall(db, embedder, settings)
    yield opened
    for recall in opened.values():
        recall.close()
    for db in databases:
        db.dispose()


def _store(recall: Recall, project: str, texts: list[str], questions: list[str]) -> list[str]:
    ensure_project(recall.db, project)
    now = utcnow()
    ids = [f"fb_{project}_{i:04d}" for i in range(len(texts))]
    with recall.db.write() as session:
        session.execute(
            insert(Interaction),
            [
                dict(
                    id=f"int_{project}_{i:04d}",
                    project_id=project,
                    session_id=f"s-{i}",
                    turn_index=0,
                    payload_hash="x",
                    occurred_at=now,
                    received_at=now,
                    model_parameters={},
                    input_messages=[{"role": "user", "content": questions[i]}],
                    context_documents=[],
                    attributes={},
                    response="Happy to help with that.",
                )
                for i in range(len(texts))
            ],
        )
        session.execute(
            insert(Feedback),
            [
                dict(
                    id=ids[i],
                    project_id=project,
                    session_id=f"s-{i}",
                    interaction_id=f"int_{project}_{i:04d}",
                    thumb="down",
                    comment=texts[i],
                    source="end_user",
                    payload_hash=str(i),
                    attributes={},
                    occurred_at=now - timedelta(seconds=i),
                    received_at=now,
                )
                for i in range(len(texts))
            ],
        )
    for lo in range(0, len(ids), 64):  # the index stage's batches
        rows = recall.load_feedback(ids[lo : lo + 64])
        recall.index_feedback([rows[i] for i in ids[lo : lo + 64]])
    return ids


@pytest.mark.parametrize("variant", ["opening", "varied"])
@pytest.mark.parametrize("labeled", _sets(), ids=lambda s: s[0])
def test_search_finds_neighbours_as_good_as_the_bare_model(
    labeled: tuple[str, list[tuple[str, str]]],
    variant: str,
    stores: dict[str, Recall],
    embedder: Embedder,
    record_property: pytest.RecordProperty,
) -> None:
    name, items = labeled
    causes = [cause for cause, _ in items]
    texts = [text for _, text in items]
    rng = np.random.default_rng(len(items))
    questions = [OPENING] * len(texts) if variant == "opening" else list(rng.choice(GENERIC, size=len(texts)))
    recall = stores[variant]
    project = name.replace("_", "-")
    ids = _store(recall, project, texts, questions)
    position = {fid: n for n, fid in enumerate(ids)}

    bare = _quality(causes, _exact(embedder.encode(texts)))
    blended = _quality(
        causes,
        _exact(embedder.encode([f"{t}\nQuestion: {q}" for t, q in zip(texts, questions, strict=True)])),
    )

    def neighbours(**query: str) -> list[int]:
        found = recall.similar(project, top_k=K + 1, min_score=None, recall_filter=None, **query)
        assert found.mode == MODE_FEEDBACK  # worded feedback and text queries use the user's words
        return [position[hit.feedback.id] for hit in found.hits]

    by_id = _quality(causes, [neighbours(feedback_id=fid) for fid in ids])
    by_text = _quality(
        causes, [[j for j in neighbours(text=texts[i]) if j != i][:K] for i in range(len(ids))]
    )
    model = embedder._model_name
    print(
        f"\n{name} ({len(items)} texts, {len(set(causes))} causes), questions: {variant}, model {model}:"
        f"\n  bare model on the raw texts      {bare}"
        f"\n  SearchSimilar by feedback id     {by_id}"
        f"\n  SearchSimilar by text            {by_text}"
        f"\n  one blended string (earlier)     {blended}"
    )
    for label, quality in (("bare", bare), ("by_id", by_id), ("by_text", by_text), ("blended", blended)):
        record_property(f"{name}.{variant}.{label}.precision_at_5", round(quality.precision, 4))
        record_property(f"{name}.{variant}.{label}.majority", round(quality.majority, 4))
    for label, quality in (("by id", by_id), ("by text", by_text)):
        assert quality.precision >= bare.precision - TOLERANCE, f"{label}: {quality} vs bare {bare}"
        assert quality.majority >= bare.majority - TOLERANCE, f"{label}: {quality} vs bare {bare}"


def test_feedback_without_words_finds_its_neighbours_through_the_question(
    stores: dict[str, Recall],
) -> None:
    recall = stores["varied"]
    pricing = [
        "How much does the Pro plan cost per month?",
        "what is the price of the pro plan",
        "Pro plan pricing?",
    ]
    other = ["How do I reset my password?", "Can I export my data to CSV?", "Where is the API documentation?"]
    questions = pricing + other
    ids = _store(recall, "wordless", [""] * len(questions), questions)  # bare thumbs-downs
    found = recall.similar("wordless", feedback_id=ids[0], top_k=3, min_score=None, recall_filter=None)
    assert found.mode == MODE_QUESTION
    assert found.query_text == pricing[0]
    assert {hit.feedback.id for hit in found.hits[:2]} == set(ids[1:3])
    # Asked for explicitly, the question field ranks the same; "both" fuses the two fields.
    asked = recall.similar(
        "wordless", feedback_id=ids[0], mode=MODE_QUESTION, top_k=2, min_score=None, recall_filter=None
    )
    assert {hit.feedback.id for hit in asked.hits} == set(ids[1:3])
