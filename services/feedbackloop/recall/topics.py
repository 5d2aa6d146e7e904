"""Readable names for complaint groups without an LLM: class-based TF-IDF keywords (c-TF-IDF).

As in BERTopic, every group's members are joined into one document per class; a term's weight in
a class is its frequency there (normalized by the class's length) times
`log(1 + A / f_t)`, where `A` is the average number of words per class and `f_t` the term's
frequency across all classes. A word every group uses ("invoice" in an invoicing app, "bot")
gets a low weight; a word one group uses often ("tax", "reminder") a high one. Words are counted
by scikit-learn's `CountVectorizer` with its English stop words, unigrams and bigrams.

What is counted is the user's own words (comment, correction, picked categories, edited or
rephrased text); the question they asked is used only for feedback with no words of its own,
since questions describe the topic rather than the fault.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer

from feedbackloop.recall.text import category_words, last_user_message
from feedbackloop.store.models import Feedback

KEYWORDS = 5
LABEL_KEYWORDS = 3
# Words per group that enter the counts: a group's texts beyond this add nothing to its label.
MAX_TEXTS_PER_GROUP = 200
_TOKEN = r"(?u)\b[a-zA-Z][a-zA-Z0-9']+\b"  # words, not numbers or amounts ("450", "$29")


def words_of(feedback: Feedback) -> str:
    """The words a group's label is drawn from, for one feedback."""
    parts = [feedback.comment or "", feedback.correction or "", feedback.implicit_text or ""]
    parts += [category_words(c) for c in feedback.category_names]
    text = " ".join(p for p in parts if p.strip())
    return text or last_user_message(feedback.interaction)


def keywords(groups: Sequence[Sequence[str]], top: int = KEYWORDS) -> list[list[str]]:
    """The top `top` c-TF-IDF terms of each group of texts (empty for a group without words)."""
    documents = [" ".join(texts[:MAX_TEXTS_PER_GROUP]) for texts in groups]
    if not any(d.strip() for d in documents):
        return [[] for _ in groups]
    vectorizer = CountVectorizer(
        stop_words="english", ngram_range=(1, 2), token_pattern=_TOKEN, lowercase=True
    )
    try:
        counts = vectorizer.fit_transform(documents)
    except ValueError:  # nothing left after stop words (every text was "the", "it", ...)
        return [[] for _ in groups]
    terms = vectorizer.get_feature_names_out()
    tf = counts.astype(np.float64)
    per_class = np.asarray(tf.sum(axis=1)).ravel()
    per_term = np.asarray(tf.sum(axis=0)).ravel()
    average = per_class.mean()
    idf = np.log(1.0 + average / per_term)
    weights = (tf.multiply(1.0 / np.where(per_class == 0, 1.0, per_class)[:, None])).multiply(idf).tocsr()
    out: list[list[str]] = []
    for row in range(weights.shape[0]):
        start, end = weights.indptr[row], weights.indptr[row + 1]
        cols, vals = weights.indices[start:end], weights.data[start:end]
        seen = np.asarray(counts[row, cols].todense()).ravel()
        # A term the group used once says little about it (and a bigram seen once is mostly two
        # neighbouring words): repeated terms first, then weight, then the term (a stable order).
        ranked = sorted(
            zip(seen < 2, -vals, terms[cols], strict=True), key=lambda p: (bool(p[0]), float(p[1]), str(p[2]))
        )
        out.append(_distinct([str(t) for _, _, t in ranked], top))
    return out


def _distinct(ranked: list[str], top: int) -> list[str]:
    """Drop a unigram that a better-ranked bigram already shows, and vice versa."""
    chosen: list[str] = []
    for term in ranked:
        words = set(term.split())
        if any(words <= set(c.split()) or set(c.split()) <= words for c in chosen):
            continue
        chosen.append(term)
        if len(chosen) == top:
            break
    return chosen


def label(terms: Sequence[str]) -> str:
    return ", ".join(terms[:LABEL_KEYWORDS])
