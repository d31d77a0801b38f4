"""Product filters: the validated schema, a deterministic natural-language parser, merging rules,
and the only translation of filter values into a Chroma ``where`` clause.

User text never reaches Chroma: the parser turns recognised phrases into typed fields of
:class:`ProductFilters` (validated by pydantic), and :func:`to_chroma_where` builds the clause from
those typed fields alone.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_PRICE_VALUE = 1_000_000.0
_NAME_MAX = 100
_LIST_MAX = 20


class ProductFilters(BaseModel):
    """Filters on catalogue metadata. Empty lists / ``None`` mean "no constraint"."""

    model_config = ConfigDict(extra="forbid")

    brands: list[str] = Field(
        default_factory=list, max_length=_LIST_MAX, description="Any of these brands."
    )
    exclude_brands: list[str] = Field(
        default_factory=list, max_length=_LIST_MAX, description="None of these brands."
    )
    categories: list[str] = Field(
        default_factory=list, max_length=_LIST_MAX, description="Any of these categories."
    )
    min_price: float | None = Field(None, ge=0, le=MAX_PRICE_VALUE, description="Price >= this.")
    max_price: float | None = Field(None, ge=0, le=MAX_PRICE_VALUE, description="Price <= this.")
    min_rating: float | None = Field(None, ge=0, le=5, description="Average rating >= this.")

    @model_validator(mode="before")
    @classmethod
    def _fold_singular_names(cls, data: Any) -> Any:
        # the API also accepts `brand` / `category` (one value) for convenience
        if isinstance(data, dict):
            data = dict(data)
            for single, plural in (("brand", "brands"), ("category", "categories")):
                value = data.pop(single, None)
                if value is not None:
                    data[plural] = [value, *(data.get(plural) or [])]
        return data

    @model_validator(mode="after")
    def _check_consistent(self) -> ProductFilters:
        for name in ("brands", "exclude_brands", "categories"):
            values = [v.strip() for v in getattr(self, name)]
            if any(not v or len(v) > _NAME_MAX or "\x00" in v for v in values):
                raise ValueError(f"{name}: each value must be 1-{_NAME_MAX} characters, no NUL")
            object.__setattr__(self, name, list(dict.fromkeys(values)))
        if (
            self.min_price is not None
            and self.max_price is not None
            and self.min_price > self.max_price
        ):
            raise ValueError(
                f"min_price ({self.min_price:g}) must not exceed max_price ({self.max_price:g})"
            )
        return self

    def is_empty(self) -> bool:
        return self == ProductFilters()

    def set_fields(self) -> dict[str, Any]:
        """Only the fields that constrain something (what responses and the history show)."""
        return self.model_dump(exclude_defaults=True)


# --- the Chroma where clause ----------------------------------------------------------------


def to_chroma_where(filters: ProductFilters) -> dict[str, Any] | None:
    """``$and`` of typed conditions on the ``products`` metadata, or ``None`` for no filter."""
    conditions: list[dict[str, Any]] = []
    if filters.brands:
        conditions.append({"brand": {"$in": list(filters.brands)}})
    if filters.exclude_brands:
        conditions.append({"brand": {"$nin": list(filters.exclude_brands)}})
    if filters.categories:
        conditions.append({"category": {"$in": list(filters.categories)}})
    if filters.min_price is not None:
        conditions.append({"price": {"$gte": float(filters.min_price)}})
    if filters.max_price is not None:
        conditions.append({"price": {"$lte": float(filters.max_price)}})
    if filters.min_rating is not None:
        conditions.append({"avg_rating": {"$gte": float(filters.min_rating)}})
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else {"$and": conditions}


def satisfies(filters: ProductFilters, metadata: dict[str, Any]) -> bool:
    """Whether a product's metadata meets the filters (same semantics as the where clause:
    a constraint on an unknown value excludes the product)."""
    brand, category = metadata.get("brand"), metadata.get("category")
    price, rating = metadata.get("price"), metadata.get("avg_rating")
    checks = [
        not filters.brands or brand in filters.brands,
        not filters.exclude_brands or brand not in filters.exclude_brands,
        not filters.categories or category in filters.categories,
        filters.min_price is None or (price is not None and price >= filters.min_price),
        filters.max_price is None or (price is not None and price <= filters.max_price),
        filters.min_rating is None or (rating is not None and rating >= filters.min_rating),
    ]
    return all(checks)


# --- vocabulary -----------------------------------------------------------------------------


def _normalise(text: str) -> str:
    """Lower-case words with a naive plural strip, so "Headphones" matches "headphone"."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
                    for w in words)  # fmt: skip


@dataclass(frozen=True)
class Vocabulary:
    """The catalogue's known brands and categories (the only values text can match)."""

    brands: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @classmethod
    def from_metadatas(cls, metadatas: Iterable[dict[str, Any]]) -> Vocabulary:
        brands: set[str] = set()
        categories: set[str] = set()
        for meta in metadatas:
            if isinstance(meta.get("brand"), str) and meta["brand"].strip():
                brands.add(meta["brand"])
            if isinstance(meta.get("category"), str) and meta["category"].strip():
                categories.add(meta["category"])
        return cls(tuple(sorted(brands)), tuple(sorted(categories)))

    def canonical_brand(self, name: str) -> str:
        """The catalogue's spelling of a brand (case-insensitive), else the name as given."""
        lowered = name.strip().lower()
        return next((b for b in self.brands if b.lower() == lowered), name.strip())

    @cached_property
    def brand_patterns(self) -> tuple[tuple[str, re.Pattern, re.Pattern], ...]:
        """(brand, mention, negated mention) per brand, longest name first; compiled once per
        vocabulary (compiling them per message cost ~2 s with 329 brands)."""
        patterns = []
        for brand in sorted(self.brands, key=len, reverse=True):
            mention = _word_pattern(brand)
            negated = re.compile(rf"{_NEGATION}(?:\w+\s+)?{mention.pattern}", re.I)
            patterns.append((brand, mention, negated))
        return tuple(patterns)

    @cached_property
    def name_words(self) -> frozenset[str]:
        """Every (normalised) word of every brand and category name."""
        names = (*self.brands, *self.categories)
        return frozenset(word for name in names for word in _normalise(name).split())

    def could_name(self, word: str) -> bool:
        """Whether ``word`` is part of a brand or category name (text the parser may match)."""
        return any(w in self.name_words for w in _normalise(word).split())

    def canonical_category(self, name: str) -> str:
        wanted = _normalise(name)
        return next((c for c in self.categories if _normalise(c) == wanted), name.strip())


def canonicalise(filters: ProductFilters, vocabulary: Vocabulary) -> ProductFilters:
    """Spell brands and categories as the catalogue does ("samsung" -> "Samsung")."""
    return filters.model_copy(
        update={
            "brands": [vocabulary.canonical_brand(b) for b in filters.brands],
            "exclude_brands": [vocabulary.canonical_brand(b) for b in filters.exclude_brands],
            "categories": [vocabulary.canonical_category(c) for c in filters.categories],
        }
    )


# --- the deterministic parser ---------------------------------------------------------------

_NUM = r"(\d{1,7}(?:[.,]\d{1,2})?)"
_MONEY = rf"(?:\$|usd\s*|eur\s*|€|£)?\s*{_NUM}\s*(?:k\b)?(?:\s*(?:dollars?|bucks|usd|euros?))?"
_NOT_STARS = r"(?!\s*(?:\+\s*)?(?:stars?|star\b|rating|/\s*5))"

_RATING_PATTERNS = [
    re.compile(rf"(?:at\s+least|minimum(?:\s+of)?|min\.?)\s+{_NUM}\s*stars?", re.I),
    re.compile(rf"{_NUM}\s*(?:\+\s*stars?|stars?\s*\+|\s*stars?\s+(?:and|or)\s+"
               r"(?:up|above|more|higher|better))", re.I),  # fmt: skip
    re.compile(rf"(?:rated|rating(?:\s+of)?)\s+(?:at\s+least\s+|above\s+|over\s+)?{_NUM}"
               r"(?:\s*stars?)?(?:\s+(?:or|and)\s+(?:up|above|more|higher|better))?",
               re.I),  # fmt: skip
    re.compile(rf"{_NUM}\s*stars?", re.I),
]
_HIGHLY_RATED = re.compile(r"\b(?:highly|well|top|best)[\s-]+rated\b", re.I)

_BETWEEN = re.compile(
    rf"(?:between|from)\s+{_MONEY}\s*(?:and|to|-)\s*{_MONEY}{_NOT_STARS}"
    rf"|{_MONEY}\s*(?:-|to)\s*{_MONEY}(?:\s*(?:dollars?|bucks))?{_NOT_STARS}",
    re.I,
)
_MAX_PRICE = re.compile(
    rf"(?:under|below|less\s+than|cheaper\s+than|at\s+most|up\s+to|no\s+more\s+than|"
    rf"not\s+more\s+than|max(?:imum)?(?:\s+price)?(?:\s+of)?|budget(?:\s+of)?|within|<=?)\s*"
    rf"{_MONEY}{_NOT_STARS}"
    rf"|{_MONEY}\s+(?:or\s+(?:less|under|below|cheaper)|max(?:imum)?){_NOT_STARS}",
    re.I,
)
_MIN_PRICE = re.compile(
    rf"(?:over|above|more\s+than|at\s+least|starting\s+(?:at|from)|min(?:imum)?(?:\s+price)?"
    rf"(?:\s+of)?|>=?)\s*{_MONEY}{_NOT_STARS}"
    rf"|{_MONEY}\s+(?:or\s+(?:more|above|over)|and\s+(?:up|above)){_NOT_STARS}",
    re.I,
)
_AROUND = re.compile(rf"(?:around|about|approximately|roughly|~)\s*{_MONEY}{_NOT_STARS}", re.I)
# a bare amount only counts as a price with a currency sign or word
_CURRENCY_ONLY = re.compile(
    rf"(?:\$|€|£)\s*{_NUM}|{_NUM}\s*(?:dollars?|bucks|usd|euros?)\b", re.I
)
_NEGATION = r"(?:not|no|except|excluding|without|but\s+not|other\s+than|anything\s+but)\s+"

_INJECTION = re.compile(
    r"ignore\s+(?:all\s+|any\s+|the\s+)?(?:previous|prior|above|earlier|your)\s+"
    r"(?:instructions?|prompts?|rules?|messages?)|disregard\s+(?:the\s+|all\s+|your\s+)?"
    r"(?:previous|prior|above|system)|system\s+prompt|you\s+are\s+now|developer\s+mode|"
    r"(?:other|another|all)\s+(?:users?'?|customers?'?|people'?s?|sessions?|conversations?|chats?)"
    r"(?:\s+(?:sessions?|conversations?|chats?|history|histories|messages?))?|"
    r"set\s+(?:the\s+)?(?:max(?:imum)?|min(?:imum)?)\s+(?:price|rating)",
    re.I,
)


@dataclass
class ParsedText:
    """What the parser read from one message: filters it names, and the text left over."""

    filters: dict[str, Any] = field(default_factory=dict)
    remainder: str = ""
    suspicious: bool = False


def _money(raw: str, match_text: str) -> float:
    value = float(raw.replace(",", "."))
    if re.search(rf"{re.escape(raw)}\s*k\b", match_text, re.I):
        value *= 1000
    return value


def _first_number_groups(match: re.Match) -> list[str]:
    return [g for g in match.groups() if g is not None]


def looks_like_injection(text: str) -> bool:
    """Text that tries to give the system instructions (treated as data; changes nothing)."""
    return bool(_INJECTION.search(text))


def _word_pattern(phrase: str) -> re.Pattern:
    return re.compile(rf"(?<![\w]){re.escape(phrase)}(?![\w])", re.I)


def _find_brands(text: str, vocabulary: Vocabulary) -> tuple[list[str], list[str], str]:
    """(wanted brands, excluded brands, text without the excluded ones). Longest first."""
    wanted: list[str] = []
    excluded: list[str] = []
    original = text
    patterns = vocabulary.brand_patterns
    for brand, mention, negated in patterns:
        if negated.search(text):
            excluded.append(brand)
            text = negated.sub(" ", text)
        elif mention.search(text):
            wanted.append(brand)  # stays in the text: the brand name helps retrieval too
    mentions = {brand: mention for brand, mention, _ in patterns}

    def position(brand: str) -> int:
        match = mentions[brand].search(original)
        return match.start() if match else len(original)

    return sorted(wanted, key=position), sorted(excluded, key=position), text


def _find_categories(text: str, vocabulary: Vocabulary) -> list[str]:
    normalised = f" {_normalise(text)} "
    found = []
    for category in sorted(vocabulary.categories, key=len, reverse=True):
        phrase = _normalise(category)
        if phrase and f" {phrase} " in normalised:
            found.append(category)
            normalised = normalised.replace(f" {phrase} ", " ")
    return found


def _only_inside_categories(brand: str, text: str, categories: list[str]) -> bool:
    """Whether every mention of ``brand`` in ``text`` is part of a category name found there
    (brand "Gift Card" in "Gift Card Accessories")."""
    rest = f" {_normalise(text)} "
    for category in sorted(categories, key=len, reverse=True):
        rest = rest.replace(f" {_normalise(category)} ", " ")
    return f" {_normalise(brand)} " not in rest


def _take(pattern: re.Pattern, text: str) -> tuple[re.Match | None, str]:
    match = pattern.search(text)
    if match is None:
        return None, text
    return match, text[: match.start()] + " " + text[match.end():]


def _parse_rating(text: str, found: dict[str, Any]) -> str:
    for pattern in _RATING_PATTERNS:
        match, text = _take(pattern, text)
        if match is not None:
            value = float(_first_number_groups(match)[0].replace(",", "."))
            if 0 <= value <= 5:
                found["min_rating"] = value
            return text
    match, text = _take(_HIGHLY_RATED, text)
    if match is not None:
        found["min_rating"] = 4.0
    return text


def _parse_price(text: str, found: dict[str, Any]) -> str:
    match, text = _take(_BETWEEN, text)
    if match is not None:
        low, high = (_money(n, match.group(0)) for n in _first_number_groups(match)[:2])
        found["min_price"], found["max_price"] = min(low, high), max(low, high)
        return text
    match, text = _take(_AROUND, text)
    if match is not None:
        centre = _money(_first_number_groups(match)[0], match.group(0))
        found["min_price"], found["max_price"] = round(centre * 0.8, 2), round(centre * 1.2, 2)
        return text
    match, text = _take(_MAX_PRICE, text)
    if match is not None:
        found["max_price"] = _money(_first_number_groups(match)[0], match.group(0))
    match, text = _take(_MIN_PRICE, text)
    if match is not None:
        found["min_price"] = _money(_first_number_groups(match)[0], match.group(0))
    if "min_price" not in found and "max_price" not in found:
        match, text = _take(_CURRENCY_ONLY, text)
        if match is not None:  # "a $30 gift card": the buyer's budget
            found["max_price"] = _money(_first_number_groups(match)[0], match.group(0))
    return text


def parse_text(text: str, vocabulary: Vocabulary) -> ParsedText:
    """Filters named in ``text`` ("under $50", "Samsung or LG", "4 stars and up", categories).

    Deterministic and total: any text gives a (possibly empty) result. A message that tries to
    instruct the system (prompt injection) yields no filters at all.
    """
    if looks_like_injection(text):
        return ParsedText(filters={}, remainder=text, suspicious=True)
    found: dict[str, Any] = {}
    remainder = _parse_rating(text, found)
    remainder = _parse_price(remainder, found)
    brands, excluded, remainder = _find_brands(remainder, vocabulary)
    categories = _find_categories(remainder, vocabulary)
    brands = [b for b in brands if not _only_inside_categories(b, remainder, categories)]
    if brands:
        found["brands"] = brands
    if excluded:
        found["exclude_brands"] = excluded
    if categories:
        found["categories"] = categories
    if (
        found.get("min_price") is not None
        and found.get("max_price") is not None
        and found["min_price"] > found["max_price"]
    ):
        found.pop("min_price")  # "over 80 but under 50": keep the cap the buyer stated last
    return ParsedText(filters=found, remainder=" ".join(remainder.split()))


# --- merging --------------------------------------------------------------------------------


def merge_filters(
    carried: ProductFilters, changes: dict[str, Any], explicit: ProductFilters | None = None
) -> ProductFilters:
    """Carried-over filters, updated by what this turn changed, then explicit request filters.

    A field the turn names replaces the carried value; a carried bound that contradicts a new
    one is dropped (the buyer's latest words win); explicit request filters win over both.
    """
    data = carried.model_dump()
    _apply(data, changes)
    if explicit is not None:
        _apply(data, explicit.model_dump(exclude_defaults=True))
    return ProductFilters.model_validate(data)


def _apply(data: dict[str, Any], changes: dict[str, Any]) -> None:
    """Overwrite ``data`` with ``changes``, dropping older values that contradict them."""
    data.update(changes)
    low, high = data.get("min_price"), data.get("max_price")
    if low is not None and high is not None and low > high:
        data["min_price" if "max_price" in changes else "max_price"] = None
    if set(changes.get("brands") or []) & set(data.get("exclude_brands") or []):
        data["exclude_brands"] = [b for b in data["exclude_brands"] if b not in changes["brands"]]
    if set(changes.get("exclude_brands") or []) & set(data.get("brands") or []):
        data["brands"] = [b for b in data["brands"] if b not in changes["exclude_brands"]]


def median_or_none(values: Iterable[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return statistics.median(known) if known else None
