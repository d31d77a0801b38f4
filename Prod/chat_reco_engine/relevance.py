"""The relevance floor: the query-product similarity below which a product is not a match.

Calibrated on the catalogue itself, not set by hand. *Probes* are requests for things the shop
does not sell: common kinds of product from every part of retail ("lawn mower", "lipstick",
"dog food") of which no word appears in any product text. The best similarity each probe reaches
in the catalogue is what a request for something we don't have scores; the floor is the 90th
percentile of those, so nine requests in ten for something unsold fall under it (the tenth is
caught because none of its words is in the catalogue, see ``ChatEngine._unsold``). Against it,
short queries of one or two title words of sampled products ("teddy bear", "fryer") give the
similarity of a *match* (the query's own product): its median is the typical match, and the
balanced accuracy of the floor between the two is reported. A homogeneous catalogue (only gift
cards) gets a low floor, because anything unsold is far from all of it; a varied one a higher
floor. Similarities are MiniLM cosines between the query and the stored product text, the same
numbers retrieval returns.
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
UNSOLD_QUANTILE = 0.9
# kinds of product from every part of retail: the catalogue's own words are dropped before use
PROBE_KINDS = (
    "laptop",
    "tablet",
    "smartphone",
    "printer",
    "router",
    "television",
    "projector",
    "drone",
    "camera lens",
    "game console",
    "refrigerator",
    "dishwasher",
    "washing machine",
    "microwave",
    "vacuum cleaner",
    "air conditioner",
    "ceiling fan",
    "space heater",
    "lawn mower",
    "chainsaw",
    "leaf blower",
    "garden hose",
    "wheelbarrow",
    "power drill",
    "circular saw",
    "toolbox",
    "ladder",
    "sofa",
    "mattress",
    "bookshelf",
    "office chair",
    "dining table",
    "wardrobe",
    "curtains",
    "rug",
    "chandelier",
    "bathtub",
    "toilet seat",
    "shower head",
    "faucet",
    "lipstick",
    "mascara",
    "perfume",
    "nail polish",
    "razor",
    "sunscreen",
    "deodorant",
    "toothpaste",
    "diapers",
    "baby stroller",
    "car seat",
    "crib",
    "pacifier",
    "dog food",
    "cat tree",
    "aquarium",
    "bird cage",
    "horse saddle",
    "fishing rod",
    "tennis racket",
    "golf clubs",
    "bicycle",
    "skateboard",
    "snowboard",
    "kayak",
    "surfboard",
    "treadmill",
    "boxing gloves",
    "football",
    "basketball",
    "violin",
    "piano",
    "electric guitar",
    "drum kit",
    "trumpet",
    "microphone",
    "vinyl record",
    "wedding dress",
    "tuxedo",
    "high heels",
    "wristwatch",
    "necklace",
    "engagement ring",
    "sunglasses",
    "handbag",
    "wallet",
    "umbrella",
    "suitcase",
    "car tyres",
    "motor oil",
    "car battery",
    "windshield wipers",
    "motorcycle helmet",
    "tent stakes",
    "sleeping bag",
    "binoculars",
    "telescope",
    "microscope",
    "calculator",
    "stapler",
    "printer paper",
    "fountain pen",
    "backpack",
    "lunch box",
    "coffee beans",
    "green tea",
    "olive oil",
    "pasta",
    "chocolate",
    "wine glasses",
    "beer",
    "vitamins",
    "protein powder",
    "first aid kit",
    "thermometer",
    "hearing aid",
    "wheelchair",
    "crutches",
    "board game",
    "jigsaw puzzle",
    "doll house",
    "toy train",
    "kite",
    "paint brushes",
    "canvas",
    "sewing machine",
    "yarn",
    "candles",
    "picture frame",
    "wall clock",
    "smoke detector",
    "door lock",
    "light bulbs",
    "extension cord",
    "batteries",
    "solar panel",
    "generator",
    "christmas tree",
    "halloween costume",
    "birthday cake",
    "flowers",
    "seeds",
    "fertilizer",
)


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
    match_median: float  # median similarity of a title-word query to its own product
    non_match_median: float  # median best similarity of a probe for something unsold
    balanced_accuracy: float  # of the floor between the two
    queries: int
    probes: int
    source: str = "calibrated"

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "value": round(self.value, 4),
            "match_median": round(self.match_median, 4),
            "non_match_median": round(self.non_match_median, 4),
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "queries": self.queries,
            "probes": self.probes,
            "source": self.source,
        }


def calibrate_floor(
    product_vectors: np.ndarray,
    titles: Sequence[str],
    vocabulary: Vocabulary,
    known: frozenset[str],
    embed: Callable[[list[str]], np.ndarray],
    *,
    n_queries: int = 300,
    seed: int = 0,
) -> RelevanceFloor | None:
    """The floor for a catalogue: ``product_vectors`` (n, dim) float32, unit rows (the stored
    embeddings), ``titles`` (n,), ``known`` the catalogue's words (``text_words``), ``embed`` maps
    texts to unit vectors. None when fewer than 20 probes or 20 title queries can be made (the
    caller then applies no floor)."""
    rng = np.random.default_rng(seed)
    probes = [p for p in PROBE_KINDS if not any(known_word(w, known) for w in p.split())]
    queries, owners = [], []
    for index in rng.permutation(len(titles)):
        words = content_words(titles[int(index)], vocabulary)
        if not words:
            continue
        length = min(len(words), int(rng.integers(1, 3)))  # one word ("fryer") or two
        start = int(rng.integers(0, len(words) - length + 1))
        queries.append(" ".join(words[start : start + length]))
        owners.append(int(index))
        if len(queries) >= n_queries:
            break
    if len(probes) < _MIN_QUERIES or len(queries) < _MIN_QUERIES:
        return None
    vectors = np.asarray(product_vectors, dtype=np.float32)
    unsold = (embed(probes) @ vectors.T).max(axis=1)
    matches = np.einsum("qd,qd->q", embed(queries), vectors[owners])
    value = float(np.quantile(unsold, UNSOLD_QUANTILE))
    accuracy = (float(np.mean(matches >= value)) + float(np.mean(unsold < value))) / 2
    return RelevanceFloor(
        value=value,
        match_median=float(np.median(matches)),
        non_match_median=float(np.median(unsold)),
        balanced_accuracy=accuracy,
        queries=len(queries),
        probes=len(probes),
    )


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
