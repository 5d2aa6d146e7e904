"""Embedder (real bundled model) and the embedded-text builder."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import numpy as np

from feedbackloop.recall.embedder import Embedder
from feedbackloop.recall.filters import RecallFilter, quote, shadow_text, tenant_expression
from feedbackloop.recall.text import EmbeddedTexts, embedded_texts, event_text, event_texts, feedback_text
from feedbackloop.routing.events import feedback_section, interaction_section
from feedbackloop.signals import is_negative, signals_of
from feedbackloop.store.models import Feedback, FeedbackCategory, Interaction


def test_encode_shape_dtype_and_norm(embedder: Embedder) -> None:
    vectors = embedder.encode(["the price is outdated", "the bot was rude", "the price is old"])
    assert embedder.dimension == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]  # same cause is closer
    assert embedder.encode([]).shape == (0, 384)


def test_encode_is_deterministic_per_text_regardless_of_batch(embedder: Embedder) -> None:
    alone = embedder.encode(["answer too long"])[0]
    batched = embedder.encode(["x", "answer too long", "y"])[1]
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_lazy_load_is_thread_safe() -> None:
    fresh = Embedder()
    assert not fresh.loaded
    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(id(fresh.load()._model))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and fresh.dimension == 384


def _feedback(**kw: object) -> Feedback:
    fields: dict[str, object] = {
        "id": "fb_1",
        "project_id": "p",
        "session_id": "s",
        "thumb": "",
        "rating": None,
        "comment": "",
        "correction": "",
        "implicit": "",
        "implicit_text": "",
        "source": "web",
        "user_role": "",
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    fields.update(kw)
    return Feedback(**fields)


def _interaction(messages: list[object]) -> Interaction:
    return Interaction(id="in_1", project_id="p", session_id="s", turn_index=0, input_messages=messages)


def test_feedback_text_parts_and_order() -> None:
    fb = _feedback(
        thumb="down",
        comment="  Price is\n wrong ",
        correction="It costs $15",
        implicit="edit",
        implicit_text="Pro costs $15/month",
    )
    fb.categories = [
        FeedbackCategory(category="outdated_info", position=0),
        FeedbackCategory(category="WrongTone"),
    ]
    it = _interaction(
        [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "How much is Pro?"},
            {"role": "assistant", "content": "$10"},
            {"role": "user", "content": [{"type": "text", "text": "and per year?"}]},
        ]
    )
    texts = embedded_texts(fb, it)
    # What the user wrote and what they asked are two texts (two vectors), never one string.
    assert texts == EmbeddedTexts(
        feedback=(
            "Price is wrong\n"
            "Correction: It costs $15\n"
            "Categories: outdated info, wrong tone\n"
            "User edited answer to: Pro costs $15/month"
        ),
        question="and per year?",
        worded=True,
        has_question=True,
    )
    assert feedback_text(fb, it) == texts.feedback
    # The same names the FeedbackFilter signals map to, so recall filters match what is indexed.
    assert signals_of(fb) == ["thumbs_down", "category", "comment", "correction", "edit"]


def test_an_events_text_is_its_stored_feedbacks_text() -> None:
    """Evaluate's dry run searches around an unstored event with the text indexing would embed."""
    fb = _feedback(thumb="down", comment="Price is wrong", implicit="rephrase", implicit_text="pro price?")
    fb.categories = [FeedbackCategory(category="outdated_info", position=0)]
    it = _interaction([{"role": "user", "content": "How much is Pro?"}])
    with_interaction = {"feedback": feedback_section(fb), "interaction": interaction_section(it)}
    assert event_texts(with_interaction) == embedded_texts(fb, it)
    assert event_text(with_interaction) == feedback_text(fb, it)
    bare = _feedback(implicit="regenerate")
    assert event_texts({"feedback": feedback_section(bare)}) == embedded_texts(bare, None)
    assert event_text({}) == "Feedback signal: none"


def test_bare_thumb_down_is_its_question() -> None:
    texts = embedded_texts(_feedback(thumb="down"), _interaction([{"role": "user", "content": "q" * 500}]))
    # No words of its own: both texts are the question excerpt, so the batch embeds it once.
    assert texts == EmbeddedTexts("q" * 300 + "…", "q" * 300 + "…", worded=False, has_question=True)
    signal_only = embedded_texts(_feedback(implicit="regenerate"), None)
    assert signal_only == EmbeddedTexts(
        "Feedback signal: regenerate", "Feedback signal: regenerate", worded=False, has_question=False
    )


def test_session_level_feedback_has_no_question() -> None:
    texts = embedded_texts(_feedback(thumb="down", comment="too slow"), None)
    assert texts == EmbeddedTexts("too slow", "too slow", worded=True, has_question=False)


def test_is_negative() -> None:
    assert is_negative(_feedback(thumb="down"))
    assert not is_negative(_feedback(thumb="up", implicit="regenerate"))
    assert is_negative(_feedback(rating=2)) and not is_negative(_feedback(rating=4))
    assert is_negative(_feedback(implicit="abandon")) and not is_negative(_feedback(implicit="copy"))
    assert is_negative(_feedback(correction="x"))
    assert is_negative(_feedback(categories=[FeedbackCategory(category="outdated_info", position=0)]))
    # A positive category under a thumb up (the example schema offers "accurate") is praise.
    assert not is_negative(
        _feedback(thumb="up", categories=[FeedbackCategory(category="accurate", position=0)])
    )


def test_quote_and_expression_escaping() -> None:
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert quote("it's") == '"it\'s"'
    expr = tenant_expression('p" or "1"=="1', RecallFilter(sources=['x" or true or "'], negative_only=True))
    assert expr == (
        'project_id == "p\\" or \\"1\\"==\\"1" and (source in ["x\\" or true or \\""]) and (negative == true)'
    )
    # Shadow encoding leaves no LIKE wildcard, quote or delimiter in the pattern.
    assert shadow_text(["thumbs_down", "a|%b"]) == "|thumbs~005Fdown|a~007C~0025b|"
