"""The relevance floor: the query-product similarity below which a product is not a match.

Calibrated on the catalogue itself, not set by hand. From a sample of products, a short query is
built from one or two of each title's content words (what a shopper types: "teddy bear",
"fryer"). Each
query has a *match*, its own product, and a best *non-match*, the most similar product whose title
shares none of the query's words (for "frying pan": a coffee grinder, not another pan). The floor
is the similarity that best separates the two (highest balanced accuracy), so a request for
something the shop does not sell ("a laptop" in a shop of monitors) scores like a non-match and
falls under it. Similarities are MiniLM cosines between the query and the stored product text, the
same numbers retrieval returns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from Prod.chat_reco_engine.filters import Vocabulary

_CONTENT_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]")  # no digits: no prices, no ratings
STOP_WORDS = frozenset(
    "a about above after all also an and any are as at be been best but by can come comes do "
    "does each even every for from get gets has have here how if in into is it its it's just "
    "like made make makes many may more most much must new no not of off on one only or other "
    "our out over own per pick so some such than that the their them then there these they this "
    "those through to too under up us use used very was way we well were what when where which "
    "while who why will with without would you your yours".split()
)
_MIN_QUERIES = 20


def content_words(text: str, vocabulary: Vocabulary) -> list[str]:
    """Lower-case words of ``text`` (first occurrence order) that are no stop word, no number and
    no part of any brand or category name, so a query of them carries no structured filter."""
    words = (w.lower() for w in _CONTENT_WORD.findall(text))
    kept = (w for w in words if len(w) > 2 and w not in STOP_WORDS)
    return list(dict.fromkeys(w for w in kept if not vocabulary.could_name(w)))


@dataclass(frozen=True)
class RelevanceFloor:
    """The calibrated floor and the evidence behind it (shown by /health and the eval)."""

    value: float
    match_median: float  # median similarity of a query to its own product
    non_match_median: float  # median similarity to the best product sharing no query word
    balanced_accuracy: float  # of the floor on the calibration queries
    queries: int
    source: str = "calibrated"

    def as_dict(self) -> dict[str, float | int | str]:
        return {"value": round(self.value, 4), "match_median": round(self.match_median, 4),
                "non_match_median": round(self.non_match_median, 4),
                "balanced_accuracy": round(self.balanced_accuracy, 4),
                "queries": self.queries, "source": self.source}  # fmt: skip


def separating_threshold(matches: np.ndarray, non_matches: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy): the t maximising
    ``(mean(matches >= t) + mean(non_matches < t)) / 2``, moved halfway down to the next lower
    observed value so it does not sit on one sample."""
    candidates = np.unique(np.concatenate([matches, non_matches]))
    accuracy = np.array([(np.mean(matches >= t) + np.mean(non_matches < t)) / 2
                         for t in candidates])  # fmt: skip
    best = int(np.argmax(accuracy))
    lower = candidates[best - 1] if best > 0 else candidates[best]
    return float(candidates[best] + lower) / 2, float(accuracy[best])


def calibrate_floor(
    product_vectors: np.ndarray,
    titles: Sequence[str],
    vocabulary: Vocabulary,
    embed: Callable[[list[str]], np.ndarray],
    *,
    n_queries: int = 300,
    seed: int = 0,
) -> RelevanceFloor | None:
    """The floor for a catalogue: ``product_vectors`` (n, dim) float32, unit rows (the stored
    embeddings), ``titles`` (n,), ``embed`` maps texts to unit vectors. None when fewer than
    20 titles have two content words (the caller then applies no floor)."""
    rng = np.random.default_rng(seed)
    word_sets = [set(content_words(t, vocabulary)) for t in titles]
    queries, owners = [], []
    for index in rng.permutation(len(titles)):
        words = content_words(titles[int(index)], vocabulary)
        if len(words) < 2:
            continue
        length = int(rng.integers(1, 3))  # shoppers type one word ("fryer") or two
        start = int(rng.integers(0, len(words) - length + 1))
        queries.append(words[start : start + length])
        owners.append(int(index))
        if len(queries) >= n_queries:
            break
    if len(queries) < _MIN_QUERIES:
        return None
    vectors = np.asarray(product_vectors, dtype=np.float32)
    similarity = embed([" ".join(q) for q in queries]) @ vectors.T  # (queries, products)
    matches, non_matches = [], []
    for row, (words, owner) in enumerate(zip(queries, owners, strict=True)):
        unrelated = np.array([not (set(words) & ws) for ws in word_sets])
        if not unrelated.any():
            continue
        matches.append(similarity[row, owner])
        non_matches.append(similarity[row, unrelated].max())
    if len(matches) < _MIN_QUERIES:
        return None
    matches_a, non_matches_a = np.array(matches), np.array(non_matches)
    value, accuracy = separating_threshold(matches_a, non_matches_a)
    return RelevanceFloor(
        value=value, match_median=float(np.median(matches_a)),
        non_match_median=float(np.median(non_matches_a)), balanced_accuracy=accuracy,
        queries=len(matches),
    )  # fmt: skip


# --- what the catalogue does not have -------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def word_key(word: str) -> str:
    """A word as the catalogue's word set stores it: lower case, naive plural stripped."""
    word = word.lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def text_words(texts: Iterable[str]) -> frozenset[str]:
    """Every word (``word_key``) of the texts: of the product texts, the words the catalogue
    knows; of the titles just shown, what the shopper is looking at."""
    return frozenset(word_key(w) for text in texts for w in _WORD.findall(text.lower()))


def known_word(word: str, known: frozenset[str]) -> bool:
    """Whether every part of ``word`` occurs in the product texts; numbers count as known (a
    price or a size is no name)."""
    parts = _WORD.findall(word.lower())
    return not parts or all(p.isdigit() or word_key(p) in known for p in parts)


def unmatched_names(
    words: Sequence[str], known: frozenset[str], message: str
) -> tuple[list[str], list[str]]:
    """(brand-like names, other terms) among the query ``words`` of ``message`` that no product
    text contains. A run of unknown words is a brand-like name when it directly precedes a word
    the shop knows ("sony headphones") or is capitalised past the start of the message ("show me
    Bang Olufsen"); otherwise its words are terms ("a laptop")."""
    brands: list[str] = []
    terms: list[str] = []
    start = 0
    while start < len(words):
        if known_word(words[start], known):
            start += 1
            continue
        end = start
        while end < len(words) and not known_word(words[end], known):
            end += 1
        run = list(words[start:end])
        capitals = next((n for n, w in enumerate(run) if not w[:1].isupper()), len(run))
        if end < len(words) or (capitals and not message.lstrip().startswith(run[0])):
            brands.append(" ".join(run))
        elif 0 < capitals < len(run):  # "Sony headphones": a name, then what it makes
            brands.append(" ".join(run[:capitals]))
            terms.extend(run[capitals:])
        else:
            terms.extend(run)
        start = end
    return list(dict.fromkeys(brands)), list(dict.fromkeys(terms))
