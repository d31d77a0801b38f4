"""The grounding guard: is an LLM answer about the products we showed, at their prices, within
the filters? An answer that is not is replaced by the grounded template (``generated_by`` =
``guard``, counted on /metrics by reason).

An answer fails when it

- ``no_product``: names none of the listed products (by title, or as "the first one" / "#2");
  only when there were products to name;
- ``unknown_product``: names a catalogue brand none of the listed products has (and that the
  customer did not mention), or a model number ("WH-1000XM4") found in no title or fact given;
- ``invented_price``: states an amount of money that is no listed price, no filter bound and no
  number of the customer's message, or gives one product another's price;
- ``contradicts_filters``: names a brand outside the brand filter, an excluded brand, or a
  category outside the category filter.

Checks are lexical on purpose: they cost microseconds per answer and a small model's
hallucinations are lexical (made-up titles, prices and models), which is what they catch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from Prod.chat_reco_engine.filters import ProductFilters, Vocabulary
from Prod.chat_reco_engine.schemas import Unmatched

REASONS = ("no_product", "unknown_product", "invented_price", "contradicts_filters")

_ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "top": 1,
    "last": -1,
}
_ORDINAL_REF = re.compile(
    r"\bthe\s+(" + "|".join(_ORDINALS) + r")\s+(?:one|option|product|pick|choice|item|listed)\b"
    r"|(?:#|\bno\.\s?|\bnumber\s|\boption\s|\bproduct\s|\bitem\s)(\d{1,2})\b",
    re.IGNORECASE,
)
_MONEY = re.compile(
    r"(?:\$|US\$|USD\s?|€|£)\s?(\d[\d,]*(?:\.\d+)?)"
    r"|\b(\d[\d,]*(?:\.\d+)?)\s?(?:dollars?|usd|bucks|euros?)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# a run mixing letters and digits ("XM4", "1000XM4", "S23"); units and ordinals are not models
_MODEL_NUMBER = re.compile(r"\b(?=\w*[a-z])(?=\w*\d)[a-z0-9]+\b", re.IGNORECASE)
_NOT_MODELS = re.compile(
    r"^\d+(?:st|nd|rd|th|s|h|hr|hrs|hz|khz|gb|tb|mb|mm|cm|m|km|kg|g|lb|lbs|oz|w|v|mah|k|"
    r"x|p|in|ft|ml|l|min|mins|d|yr|yrs|pc|pcs|pack)$",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Verdict:
    """Whether an answer is grounded, why not, and which listed products (0-based) it names."""

    reasons: tuple[str, ...]
    named: tuple[int, ...]
    detail: tuple[str, ...] = ()

    @property
    def grounded(self) -> bool:
        return not self.reasons


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _mentions(text_words: list[str], name: str) -> bool:
    """Whether the words of ``name`` occur consecutively in ``text_words`` (a plural s, too)."""
    name_words = _words(name)
    n = len(name_words)
    if not n:
        return False
    for i in range(len(text_words) - n + 1):
        window = text_words[i : i + n]
        if window[:-1] == name_words[:-1] and window[-1] in (
            name_words[-1],
            f"{name_words[-1]}s",
            name_words[-1].removesuffix("s"),
        ):
            return True
    return False


def _sentences(text: str) -> list[list[str]]:
    return [_words(s) for s in re.split(r"[.!?\n]+", text) if s.strip()]


def _named_products(answer: str, titles: list[str]) -> set[int]:
    """Listed products the answer names: the whole title, or every word of it in one sentence
    ("the Pro earbuds from Sony"), or by position ("the first one", "#2")."""
    named = set()
    words, sentences = _words(answer), _sentences(answer)
    for n, title in enumerate(titles):
        title_words = set(_words(title))
        if _mentions(words, title) or (
            title_words and any(title_words <= set(s) for s in sentences)
        ):
            named.add(n)
    for match in _ORDINAL_REF.finditer(answer):
        word, digits = match.group(1), match.group(2)
        position = _ORDINALS[word.lower()] if word else int(digits)
        index = len(titles) - 1 if position == -1 else position - 1
        if 0 <= index < len(titles):
            named.add(index)
    return named


def _amounts(text: str) -> list[float]:
    found = []
    for match in _MONEY.finditer(text):
        raw = (match.group(1) or match.group(2)).replace(",", "")
        try:
            found.append(float(raw))
        except ValueError:
            continue
    return found


def _same_amount(value: float, known: Iterable[float]) -> bool:
    # "$52" for $52.00 and "$52" for $51.99 are the listed price; "$55" is not
    return any(abs(value - k) < 0.011 or round(k) == value or int(k) == value for k in known)


def check_answer(
    answer: str,
    *,
    products: list[tuple[str, dict[str, Any], str]],
    filters: ProductFilters,
    vocabulary: Vocabulary,
    message: str,
    unmatched: Unmatched | None = None,
) -> Verdict:
    """Judge ``answer`` against the listed products ((item_id, metadata, reason) as given to the
    prompt), the active filters, the catalogue's brands and categories, and the customer's
    message. See the module docstring for the rules."""
    reasons: list[str] = []
    detail: list[str] = []
    titles = [str(meta.get("title") or item_id) for item_id, meta, _ in products]
    named = _named_products(answer, titles)
    if products and not named:
        reasons.append("no_product")

    answer_words = _words(answer)
    message_words = _words(message)
    listed_brands = {str(meta["brand"]).lower() for _, meta, _ in products if meta.get("brand")}
    excused = {b.lower() for b in (unmatched.brands if unmatched else [])}
    filter_brands = {b.lower() for b in filters.brands}
    excluded = {b.lower() for b in filters.exclude_brands}
    for brand in vocabulary.brands:
        key = brand.lower()
        if not _mentions(answer_words, brand) or key in listed_brands or key in excused:
            continue
        if (filter_brands and key not in filter_brands) or key in excluded:
            reasons.append("contradicts_filters")
            detail.append(f"brand {brand} is outside the filters")
        elif not _mentions(message_words, brand):
            reasons.append("unknown_product")
            detail.append(f"brand {brand} is not among the listed products")

    listed_categories = {str(m["category"]).lower() for _, m, _ in products if m.get("category")}
    if filters.categories:
        allowed = {c.lower() for c in filters.categories} | listed_categories
        for category in vocabulary.categories:
            if category.lower() not in allowed and _mentions(answer_words, category):
                if not _mentions(message_words, category):
                    reasons.append("contradicts_filters")
                    detail.append(f"category {category} is outside the filters")

    facts = " ".join(
        [
            message,
            *titles,
            *(f"{i} {m.get('brand', '')} {m.get('category', '')} {r}" for i, m, r in products),
        ]
    ).lower()
    fact_tokens = set(_MODEL_NUMBER.findall(facts))
    for token in _MODEL_NUMBER.findall(answer):
        if token.lower() not in fact_tokens and not _NOT_MODELS.match(token):
            reasons.append("unknown_product")
            detail.append(f"model {token} is in no listed title")
            break

    prices = [float(m["price"]) for _, m, _ in products if m.get("price") is not None]
    bounds = [b for b in (filters.min_price, filters.max_price) if b is not None]
    said = [float(n) for n in _NUMBER.findall(message)]
    for amount in _amounts(answer):
        if not _same_amount(amount, [*prices, *bounds, *said]):
            reasons.append("invented_price")
            detail.append(f"${amount:g} is no listed price")
            break
    else:  # a listed price given to the wrong product: a sentence naming one product only, or
        # the sentences after it naming none ("it is $46")
        current = None
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", answer):
            named_here = _named_products(sentence, titles)
            if len(named_here) > 1:
                current = None
            elif named_here:
                current = named_here.pop()
            if current is None:
                continue
            _, meta, _ = products[current]
            own = [float(meta["price"])] if meta.get("price") is not None else []
            wrong = [a for a in _amounts(sentence) if not _same_amount(a, [*own, *bounds, *said])]
            if wrong:
                reasons.append("invented_price")
                detail.append(f"${wrong[0]:g} is not the price of {meta.get('title')}")
                break

    unique = tuple(dict.fromkeys(reasons))
    return Verdict(reasons=unique, named=tuple(sorted(named)), detail=tuple(detail))


SUMMARY_REASONS = (
    "no_fact",
    "echo",
    "unfinished",
    "unknown_product",
    "unknown_category",
    "invented_price",
)


def check_summary(
    summary: str,
    *,
    items: list[tuple[str, dict[str, Any]]],
    categories: list[str],
    brands: list[str],
    amounts: list[float],
    vocabulary: Vocabulary,
    labels: Iterable[str] = (),
) -> Verdict:
    """Judge a preference summary (:mod:`.profile`) against the facts it was written from: the
    items ((item_id, metadata)), categories, brands and price amounts given to the LLM, and the
    ``labels`` of the prompt's fact lines.

    ``no_fact``: names none of the categories, brands or item titles (not about this user);
    ``echo``: copies a label of the prompt ("Top categories:"), i.e. recites the facts;
    ``unfinished``: no sentence end (cut at the token limit); then the rules of
    :func:`check_answer` with the facts as the listed products, the categories as the only
    allowed ones and the names and amounts as what the customer said: ``unknown_product`` (a
    catalogue brand or model number not in the facts), ``unknown_category`` (a catalogue
    category not in the facts), ``invented_price``."""
    words = _words(summary)
    titles = [str(meta.get("title") or item_id) for item_id, meta in items]
    named = any(_mentions(words, name) for name in [*categories, *brands, *titles])
    allowed = [c for c in dict.fromkeys([*categories, *(m.get("category") for _, m in items)]) if c]
    said = " ".join([*categories, *brands, *(f"{a:.2f}" for a in amounts)])
    verdict = check_answer(
        summary,
        products=[(item_id, meta, "") for item_id, meta in items],
        filters=ProductFilters(categories=allowed[:20]),
        vocabulary=vocabulary,
        message=said,
    )
    renamed = {"contradicts_filters": "unknown_category"}
    reasons = [renamed.get(r, r) for r in verdict.reasons if r != "no_product"]
    lowered = summary.lower()
    if not re.search(r"[.!?][\"')\]]*\s*$", summary):
        reasons.insert(0, "unfinished")
    if any(label.lower() in lowered for label in labels):
        reasons.insert(0, "echo")
    if not named:
        reasons.insert(0, "no_fact")
    return Verdict(tuple(dict.fromkeys(reasons)), verdict.named, verdict.detail)
