"""The texts embedded for one feedback event, and the scalar metadata indexed beside it.

Each feedback is embedded twice, as two separately searchable meanings (two vector fields of the
Milvus collection, `recall.index`):

**feedback**: what the user wrote, in this fixed order (absent parts are left out):

1. ``<comment>``, unlabeled: the user's own words are the strongest signal of the cause. No
   label: a constant prefix on every row pulls all vectors together, and a free-text query
   (which carries no label) matches an unlabeled comment directly.
2. ``Correction: <correction>``: what the answer should have said; it names the fault's topic.
3. ``Categories: <words>``: picked categories rendered as words (``wrong_tone`` -> ``wrong tone``)
   so that a category-only feedback lands near comments that describe the same problem.
4. ``User edited answer to: <text>`` / ``User rephrased question: <text>``: implicit edit and
   rephrase texts, which carry what the user actually wanted.

**question**: the first 300 characters of the user's last input message, unlabeled.

Kept apart because one blended string (the comment followed by ``Question: <excerpt>``) pulled
feedback whose questions looked alike together whatever the complaint said: with every labeled
text as the comment of a thumbs-down under the same opening question, neighbours were measurably
worse than the bare model's on the comments alone (README, "What text is embedded").

A feedback without words of its own (a bare thumbs-down, an abandon) has nothing for the first
meaning: its feedback text is its question (so both vectors are one embedding), and a search by
its id goes to the question field. With neither words nor a question, both texts describe the
signal (``Feedback signal: thumb_down``), so the row still embeds to something stable.

Left out on purpose: the model's response (long, and similar answers are not similar faults),
ids, user ids, ratings and thumbs as numbers (they are filterable metadata instead: the `signals`
and `negative` fields), and free attributes (unbounded, often secrets or noise).

The result is deterministic: the same feedback and interaction always give the same texts
(whitespace is collapsed, no clock or randomness), so a rebuild from SQL reproduces the index.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from feedbackloop.signals import signals_of
from feedbackloop.store.models import Feedback, Interaction

QUESTION_EXCERPT_CHARS = 300
PART_MAX_CHARS = 1000

_WS = re.compile(r"\s+")


def _clean(text: str, limit: int) -> str:
    text = _WS.sub(" ", text).strip()
    if len(text) > limit:
        text = text[:limit].rstrip() + "…"
    return text


def category_words(category: str) -> str:
    """``wrong_tone`` / ``wrong-tone`` / ``WrongTone`` -> ``wrong tone``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", category)
    return _clean(re.sub(r"[_\-./:]+", " ", spaced).lower(), 100)


def last_user_message(interaction: Interaction | None) -> str:
    """Text of the interaction's last message with role ``user``."""
    return last_user_text((interaction.input_messages or []) if interaction is not None else [])


def last_user_text(messages: Sequence[Any]) -> str:
    """Text of the last message with role ``user`` (OpenAI-style dicts, or plain strings)."""
    for message in reversed(messages):
        if isinstance(message, str):
            return message
        if isinstance(message, dict) and message.get("role", "user") == "user":
            return _content_text(message.get("content", ""))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts, in order
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


@dataclass(frozen=True)
class EmbeddedTexts:
    """The two texts embedded for one feedback (see the module docstring)."""

    feedback: str
    question: str
    worded: bool  # the feedback has words of its own (else `feedback` is its question)
    has_question: bool  # there is a user question (else `question` is the feedback text)


def embedded_texts(feedback: Feedback, interaction: Interaction | None) -> EmbeddedTexts:
    """The texts embedded for `feedback` (see the module docstring for what and why)."""
    return compose_texts(
        comment=feedback.comment,
        correction=feedback.correction,
        categories=feedback.category_names,
        implicit=feedback.implicit,
        implicit_text=feedback.implicit_text,
        question=last_user_message(interaction),
        signals=signals_of(feedback),
    )


def feedback_text(feedback: Feedback, interaction: Interaction | None) -> str:
    """The feedback-side text of `feedback`: the user's own words (its question if it has none)."""
    return embedded_texts(feedback, interaction).feedback


def event_texts(event: Mapping[str, Any]) -> EmbeddedTexts:
    """The same texts for a policy event (feedback and interaction sections), stored or not: a
    dry run of an event that was never submitted searches with what indexing it would embed."""
    fb = event.get("feedback") or {}
    interaction = event.get("interaction") or {}
    return compose_texts(
        comment=str(fb.get("comment") or ""),
        correction=str(fb.get("correction") or ""),
        categories=[str(c) for c in fb.get("categories") or []],
        implicit=str(fb.get("implicit") or ""),
        implicit_text=str(fb.get("implicit_text") or ""),
        question=last_user_text(interaction.get("input_messages") or []),
        signals=[str(s) for s in fb.get("signals") or []],
    )


def event_text(event: Mapping[str, Any]) -> str:
    """The feedback-side text of a policy event (what its feedback vector is embedded from)."""
    return event_texts(event).feedback


def compose_texts(
    *,
    comment: str,
    correction: str,
    categories: Sequence[str],
    implicit: str,
    implicit_text: str,
    question: str,
    signals: Sequence[str],
) -> EmbeddedTexts:
    parts: list[str] = []
    if comment.strip():
        parts.append(_clean(comment, PART_MAX_CHARS))
    if correction.strip():
        parts.append("Correction: " + _clean(correction, PART_MAX_CHARS))
    words = [w for w in (category_words(c) for c in categories) if w]
    if words:
        parts.append("Categories: " + ", ".join(words))
    if implicit_text.strip():
        label = {"edit": "User edited answer to", "rephrase": "User rephrased question"}.get(
            implicit, "User action text"
        )
        parts.append(f"{label}: " + _clean(implicit_text, PART_MAX_CHARS))
    asked = _clean(question, QUESTION_EXCERPT_CHARS)
    own = "\n".join(parts)
    # Nothing worded at all (e.g. a bare regenerate on a turn with no input): describe the
    # signal, so the row still embeds to something stable rather than an empty string.
    fallback = own or asked or "Feedback signal: " + (" ".join(signals) or "none")
    return EmbeddedTexts(
        feedback=fallback, question=asked or fallback, worded=bool(own), has_question=bool(asked)
    )


def distinct_texts(texts: Sequence[EmbeddedTexts]) -> list[str]:
    """The model inputs for a batch: every feedback's feedback text and question, each distinct
    text once, in first-seen order (a question asked in many sessions, or the question a
    wordless feedback uses as its own text, is embedded once)."""
    return list(dict.fromkeys(t for pair in texts for t in (pair.feedback, pair.question)))


def epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the store hands back aware datetimes; tests may not
    return int(moment.timestamp() * 1000)
