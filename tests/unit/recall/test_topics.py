"""Group labels: class-based TF-IDF keywords over the members' words."""

from __future__ import annotations

from feedbackloop.recall import topics
from feedbackloop.store.models import Feedback, FeedbackCategory

TAX = ["The tax rate on the invoice is wrong", "wrong VAT rate on my invoice", "tax rate is 19% not 20%"]
CURRENCY = ["invoice shows USD not EUR", "wrong currency on the invoice", "currency converted to USD again"]


def test_keywords_favour_what_one_group_says_over_what_every_group_says() -> None:
    tax, currency = topics.keywords([TAX, CURRENCY])
    assert tax[:2] == ["rate", "tax"]
    assert currency[:2] == ["currency", "usd"]
    # "invoice" is said as often in each group, and ranks below each group's own words.
    assert tax.index("invoice") > tax.index("tax") and currency.index("invoice") > 1
    assert topics.label(currency) == ", ".join(currency[:3])


def test_keywords_are_stable_and_skip_stop_words_and_numbers() -> None:
    first = topics.keywords([TAX, CURRENCY])
    assert topics.keywords([TAX, CURRENCY]) == first
    assert not {"the", "is", "19", "20", "on"} & {t for group in first for t in group}


def test_a_group_without_words_gets_no_keywords() -> None:
    assert topics.keywords([["the", "it"], ["is"]]) == [[], []]
    assert topics.keywords([[], TAX])[0] == []


def test_the_words_of_a_feedback_are_its_own_before_its_question() -> None:
    worded = Feedback(id="f1", comment="tax is wrong", correction="use 20%", implicit_text="")
    worded.categories = [FeedbackCategory(category="wrong_tax", position=0)]
    assert topics.words_of(worded) == "tax is wrong use 20% wrong tax"
