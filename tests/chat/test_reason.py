"""The product's "why" sentence: cut at a word boundary with an ellipsis, never mid-word (the
service's ``reason`` and the example client's table column)."""

from __future__ import annotations

import re

import pytest

from Prod.chat_reco_engine.retrieval import best_sentence, clip_words
from Prod.examples.main_example_chat import why

LONG = (
    "Wireless over-ear headphones with active noise cancelling, fifty hours of battery life, "
    "a foldable frame for travel and a braided cable for wired listening on long flights."
)


def _assert_cut_at_a_word(short: str, full: str, limit: int) -> None:
    assert len(short) <= limit and short.endswith("…"), short
    kept = short[:-1]
    assert full.startswith(kept), (short, full)
    # what follows the kept text is a separator: its last word is whole
    assert re.match(r"[\s,;:-]", full[len(kept)]), (kept, full[len(kept) :][:10])


@pytest.mark.parametrize("limit", [20, 37, 50, 70, 120])
def test_clip_words_cuts_between_words(limit):
    short = clip_words(LONG, limit)
    _assert_cut_at_a_word(short, LONG, limit)
    assert short.split()[-1].rstrip("…") in LONG.split()  # a whole word of the text


def test_clip_words_keeps_a_text_that_fits_and_cuts_one_long_word():
    assert clip_words("Small speaker.", 14) == "Small speaker."
    assert clip_words("x" * 30, 10) == "x" * 9 + "…"


def test_best_sentence_reason_is_cut_at_a_word_boundary():
    document = f"Nordavia Headphones. {LONG} Brand: Nordavia. Price: $99.00."
    reason = best_sentence(document, "headphones for long flights", max_chars=100)
    _assert_cut_at_a_word(reason, LONG, 100)


@pytest.mark.parametrize("limit", [25, 70])
def test_the_example_client_s_why_column_is_cut_at_a_word_boundary(limit):
    short = why(LONG, limit)
    _assert_cut_at_a_word(short, LONG, limit)
    assert why("Short reason.", limit) == "Short reason." and why("", limit) == ""
