"""Dialogue state: is a message a refinement of the current request, a new request, or a reset?
And the standalone query and filter changes that follow from the answer.

The decision uses what the shop already has, not the length of the message:

- **reset** words ("start over", "forget that", "something else") clear the conversation; with
  nothing else they end there (the assistant asks what the shopper is looking for), with a
  request ("start over, dog toys") that request starts afresh.
- a message with no topic words of its own ("cheaper ones?", "what about Nordavia?", "under $50",
  "better rated"), one that only qualifies ("for running", "with a case", "in black") or one that
  points back ("a black one", "those in red") refines.
- a category of the catalogue other than the current one is a new request.
- otherwise the message's topic words are embedded (MiniLM) and compared, against the relevance
  floor, with the products the shopper was just shown and with the whole catalogue: words that
  fit the current products refine ("noise cancelling" after earbuds); words that fit other
  products and not these, or fit them much better ("a yoga mat" after smartwatches, "a chef's
  knife" after frying pans), start a new request, as do words the catalogue has never seen
  ("a laptop" in a shop without laptops: we say we don't sell it).

On a new request the topic words, the brands, the categories and the price range of the old one
are dropped: they describe that product. Only constraints that describe the shopper, not the
product, carry over: a minimum rating ("only well-rated stuff") and excluded brands ("nothing from
X").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from Prod.chat_reco_engine.filters import (
    ProductFilters,
    Vocabulary,
    median_or_none,
    parse_text,
)
from Prod.chat_reco_engine.relevance import text_words, unmatched_names, word_key


class TurnKind(str, Enum):
    REFINE = "refine"
    NEW = "new"
    RESET = "reset"


@dataclass(frozen=True)
class TopicFit:
    """Best MiniLM similarity of a message's topic words to the products just shown and to the
    whole catalogue."""

    current: float
    catalogue: float


TopicMatcher = Callable[[list[str]], TopicFit]

_CHEAPER = re.compile(
    r"\b(?:cheaper|less\s+expensive|lower\s+price[sd]?|more\s+affordable|inexpensive|"
    r"too\s+expensive|budget)\b",
    re.I,
)
_PRICIER = re.compile(
    r"\b(?:more\s+expensive|pricier|higher[\s-]end|premium|fancier|too\s+cheap)\b", re.I
)
_BETTER_RATED = re.compile(r"\b(?:better|higher)[\s-]+(?:rated|reviewed|ratings?|reviews?)\b", re.I)
_RESET = re.compile(
    r"\b(?:start(?:ing)?\s+(?:over|again|afresh|from\s+scratch)|new\s+search|reset|"
    r"clear\s+(?:the\s+|all\s+|my\s+)?(?:filters|search|everything)|never\s*mind|"
    r"forget\s+(?:it|that|this|everything|all\s+that|the\s+filters|what\s+i\s+said)|"
    r"something\s+(?:else|different)|scratch\s+that|let'?s\s+try\s+something\s+else)\b",
    re.I,
)
_ANY_BRAND = re.compile(
    r"\b(?:any\s+brand|other\s+brands?|all\s+brands|whatever\s+brand|"
    r"(?:don'?t|do\s+not)\s+care\s+about\s+(?:the\s+)?brand)\b",
    re.I,
)
_ANY_PRICE = re.compile(
    r"\b(?:any\s+price|no\s+budget|price\s+doesn'?t\s+matter|forget\s+the\s+price|"
    r"(?:don'?t|do\s+not)\s+care\s+about\s+(?:the\s+)?price)\b",
    re.I,
)
# a message that only qualifies the current request: "for running", "with a case", "in black"
_QUALIFIER = re.compile(
    r"^\s*(?:(?:and|but|also|maybe|ideally|preferably|only|just)\s+)*(?:for|with|without|in|"
    r"that|which|made\s+of|in\s+(?:a|an)|smaller|bigger|larger|lighter|heavier|longer|shorter|"
    r"more|less)\b",
    re.I,
)
# "I need a chef's knife", "now show me frying pans", "some dog treats": an object of its own,
# (a message that points back, "a cheaper one", has refined before this is asked)
_NAMES_OBJECT = re.compile(
    r"\b(?:a|an|some)\s+[\w']|^\W*(?:now\b|(?:and\s+|also\s+)?(?:show|find|get)\s+me\b|"
    r"i\s+(?:need|want|'?m\s+looking\s+for)\b|(?:i'?m\s+)?looking\s+for\b|"
    r"do\s+you\s+(?:have|sell|carry)\b)",
    re.I,
)
_POINTS_BACK = re.compile(r"\b(?:ones?|those|these|them|it|same)\b", re.I)
_FILLER = re.compile(
    r"\b(?:what|how|about|any|anything|something|from|by|show|me|some|the|a|an|ones?|those|"
    r"these|them|please|instead|only|and|or|but|also|i'(?:m|d|ve|ll)|im|i|want|wants|need|"
    r"needs|like|would|"
    r"could|you|do|have|else|options?|more|other|others|similar|alternatives?|same|with|in|of|"
    r"for|is|are|there|can|let|let's|lets|see|find|get|just|cheaper|less|expensive|pricier|"
    r"premium|better|higher|rated|reviewed|lower|price|prices|affordable|budget|too|cheap|"
    r"brand|brands|now|looking|look|search|searching|shopping|buy|buying|hi|hello|hey|thanks|"
    r"thank|ok|okay|well|maybe|actually|perhaps|really|then|that|this|it|my|we|our|us|to|"
    r"stuff|thing|things|got|sell|carry|recommend|suggest|rather|switch|"
    r"change|start|over|again|new|reset|never|mind|forget|everything|scratch|different|"
    r"ideally|preferably|which|kind|type|sort|few|good|great|nice)\b",
    re.I,
)


@dataclass(frozen=True)
class Condensed:
    """A standalone query and the filter changes this message makes."""

    query: str
    changes: dict[str, Any]
    carried: ProductFilters
    kind: TurnKind
    suspicious: bool
    topic_words: list[str] = field(default_factory=list)
    unknown_brands: list[str] = field(default_factory=list)  # brand-like names nobody sells
    unknown_terms: list[str] = field(default_factory=list)  # words no product text contains
    notes: list[str] = field(default_factory=list)


def query_words(text: str) -> list[str]:
    """The searchable words of ``text``: no punctuation, no conversational filler."""
    stripped = _FILLER.sub(" ", re.sub(r"[^\w\s&'-]|(?<!\w)['-]|['-](?!\w)", " ", text))
    return stripped.split()


def _without_names(words: list[str], names: list[str]) -> list[str]:
    """``words`` less the words of the given brand / category names (case-insensitive)."""
    named = {w.lower() for name in names for w in re.findall(r"[\w&'-]+", name)}
    return [w for w in words if w.lower() not in named]


def _derived_changes(
    message: str, carried: ProductFilters, previous_products: list[dict[str, Any]]
) -> dict[str, Any]:
    """Relative requests ("cheaper", "better rated", "any brand") -> concrete filter values."""
    changes: dict[str, Any] = {}
    prices = median_or_none(p.get("price") for p in previous_products)
    if _CHEAPER.search(message):
        cap = round(prices - 0.01, 2) if prices else None
        if carried.max_price is not None:
            cap = min(cap, carried.max_price * 0.99) if cap else carried.max_price * 0.8
        if cap is not None and cap >= 0:
            changes["max_price"] = round(cap, 2)
    elif _PRICIER.search(message) and prices:
        changes["min_price"] = round(prices + 0.01, 2)
    if _BETTER_RATED.search(message):
        ratings = median_or_none(p.get("avg_rating") for p in previous_products) or 0.0
        floor = max(ratings, (carried.min_rating or 0.0) + 0.5)
        changes["min_rating"] = round(min(5.0, floor), 1)
    if _ANY_BRAND.search(message):
        changes.update(brands=[], exclude_brands=[])
    if _ANY_PRICE.search(message):
        changes.update(min_price=None, max_price=None)
    return changes


def shopper_constraints(filters: ProductFilters) -> ProductFilters:
    """What carries over to a new request: constraints on the shopper's taste, not the product."""
    return ProductFilters(min_rating=filters.min_rating, exclude_brands=filters.exclude_brands)


def classify(
    text: str,
    *,
    topic: list[str],
    unknown_terms: list[str],
    shown_titles: frozenset[str],
    named_categories: list[str],
    carried: ProductFilters,
    topic_fit: TopicMatcher | None,
    floor: float | None,
    margin: float | None = None,
) -> TurnKind:
    """REFINE or NEW for a message with a current request (see the module docstring).
    ``topic`` holds the message's own topic words (no brand names), ``unknown_terms`` those of
    them that no product text contains, ``shown_titles`` the words most titles just shown share.
    ``margin``: how much better than the products shown another product must fit the words for
    them to name something else (the calibrated gap between a typical match and a typical
    request for something unsold, see :mod:`.relevance`)."""
    if named_categories and set(named_categories) != set(carried.categories):
        return TurnKind.NEW
    if not topic or _QUALIFIER.match(text) or _POINTS_BACK.search(text):
        return TurnKind.REFINE  # "cheaper ones?", "for running", "a black one"
    if topic_fit is None or floor is None:
        return TurnKind.NEW  # no model to compare with: topic words of its own start afresh
    fit = topic_fit(topic)
    new_object = _NAMES_OBJECT.search(text) is not None and not any(
        word_key(w) in shown_titles for w in topic
    )
    names_something_else = margin is not None and fit.catalogue - fit.current > margin
    if new_object and (fit.catalogue >= floor or names_something_else):
        return TurnKind.NEW
    if fit.current >= floor and not names_something_else:
        return TurnKind.REFINE
    if fit.catalogue >= floor or len(unknown_terms) == len(topic):
        return TurnKind.NEW
    return TurnKind.REFINE  # words that fit nothing well qualify ("something sturdier")


def condense(
    message: str,
    *,
    previous_query: str | None,
    carried: ProductFilters,
    previous_products: list[dict[str, Any]],
    vocabulary: Vocabulary,
    topic_fit: TopicMatcher | None = None,
    floor: float | None = None,
    margin: float | None = None,
    known_words: frozenset[str] | None = None,
) -> Condensed:
    """Turn a message into a standalone query plus filter changes, deterministically.

    "cheaper ones?" after "sony headphones under $100" -> query "sony headphones", max_price
    below the previous results' median price; "what about Sony?" -> same topic, brands=[Sony];
    "now a yoga mat" -> query "yoga mat", the old topic, brand and price dropped; "start over"
    clears everything. An instruction hidden in the message is dropped; the rest still counts.
    """
    parsed = parse_text(message, vocabulary)
    text = parsed.remainder
    notes = list(parsed.ignored)
    reset = _RESET.search(text)
    if reset:
        text = _RESET.sub(" ", text)
        carried, previous_query = ProductFilters(), None
    changes = dict(parsed.filters)
    words = query_words(text)
    named_brands = list(changes.get("brands") or [])
    named_categories = list(changes.get("categories") or [])
    topic = _without_names(words, [*named_brands, *named_categories])
    unknown_brands, unknown_terms = (
        unmatched_names(words, known_words, message) if known_words else ([], [])
    )
    topic = _without_names(topic, unknown_brands)  # "what about Sony?" still refines
    if reset and not words and not changes:
        return Condensed("", {}, ProductFilters(), TurnKind.RESET, parsed.suspicious, notes=notes)
    if previous_query is None:
        kind = TurnKind.RESET if reset else TurnKind.NEW
    else:
        shown = _common_title_words(previous_products)
        kind = classify(
            text,
            topic=topic,
            unknown_terms=unknown_terms,
            shown_titles=shown,
            named_categories=named_categories,
            carried=carried,
            topic_fit=topic_fit,
            floor=floor,
            margin=margin,
        )
    if kind is TurnKind.REFINE:
        changes = {**_derived_changes(message, carried, previous_products), **changes}
        base = previous_query or ""
        if named_brands and carried.brands:  # "what about Sony?" replaces the brand's words
            base = " ".join(_without_names(base.split(), list(carried.brands)))
        query = _join_unique(base, " ".join(words))
    else:
        carried = shopper_constraints(carried)
        query = " ".join(words)
    query = query or " ".join(_RESET.sub(" ", message).split())  # filters only: "under $50"
    return Condensed(
        query,
        changes,
        carried,
        kind,
        parsed.suspicious,
        topic_words=topic,
        unknown_brands=unknown_brands,
        unknown_terms=unknown_terms,
        notes=notes,
    )


def _common_title_words(products: list[dict[str, Any]]) -> frozenset[str]:
    """Words in at least half of the products' titles: what they are, not a stray result's."""
    titles = [text_words([str(p.get("title") or "")]) for p in products]
    counts = Counter(word for title in titles for word in title)
    return frozenset(w for w, n in counts.items() if 2 * n >= len(titles))


def _join_unique(base: str, extra: str) -> str:
    seen = {w.lower() for w in base.split()}
    added = [w for w in extra.split() if w.lower() not in seen]
    return " ".join([*base.split(), *added]).strip()
