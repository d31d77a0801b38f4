"""Product filters: the validated schema, a deterministic natural-language parser, merging rules,
and the only translation of filter values into a Chroma ``where`` clause.

User text never reaches Chroma: the parser turns recognised phrases into typed fields of
:class:`ProductFilters` (validated by pydantic), and :func:`to_chroma_where` builds the clause from
those typed fields alone.

Brand and category names are matched on a normal form of their words (case, accents, punctuation,
"&"/"and" and word splits aside: "barnes and noble", "levis", "1800flowers.com") through one dict
per vocabulary, and overlapping readings are settled for the whole message at once
(:func:`select_mentions`). Instructions hidden in a message are cut out before parsing
(:func:`parse_text`); text quoted to an LLM is escaped by ``llm.as_data``.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from Prod.common.schemas import FILTER_TEXT_MAX as _NAME_MAX
from Prod.common.schemas import FILTER_VALUES_MAX as _LIST_MAX
from Prod.common.schemas import PRICE_MAX as MAX_PRICE_VALUE


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

# A word: letters/digits, with inner or trailing apostrophes kept ("Levi's", "Dunkin'").
_TOKEN = re.compile(r"\w+(?:['’‘`´]\w+)*['’]?")
_CONNECTOR = "and"  # "&" is no word at all, so "Barnes & Noble" = "Barnes and Noble"
# A match across different word splits ("game stop" for "GameStop", "llbean" for "L.L.Bean")
# needs this many letters; shorter ones ("a t" for "AT") are accidents.
_MIN_JOINED = 4
# Brands made only of these words ("Best", "At Home", "Express", "Target", "The Counter") are
# ordinary words too: they count as a brand only when written as one (see `_reads_as_brand`).
_COMMON_WORDS = frozenset(
    "a about above after again all also am an and any are as at away back be been before being "
    "below best better between big both but by can come could day did do does doing down each "
    "easy even every few first for free from fun get give go going good great had has have her "
    "here him his home how i if in into is it its just kind last less like little long look lot "
    "love made make many max maximum me min minimum more most much my new next no nor not now "
    "of off old on once one only or other our out over own per plus pro real really right same "
    "see set should show so some still such take than that the their them then there these they "
    "thing this those through to too top under up us very want was way we well were what when "
    "where which while who why will with within without would yes you your "
    "basic basics cheap cheaper classic deal deals dollar dollars bucks euro euros express gift "
    "gifts highly original perfect premium price prices rated rating select simple smart star "
    "stars store shop target ultimate value usd".split()
)


def _key(word: str) -> str:
    """A word's matching form: accents stripped, case-folded, letters and digits only
    ("Levi's" -> "levis", "Café" -> "cafe")."""
    return "".join(c for c in unicodedata.normalize("NFKD", word).casefold() if c.isalnum())


def _singular(key: str) -> str:
    """A naive plural strip, so "Headphones" matches "headphone"."""
    return key[:-1] if len(key) > 3 and key.endswith("s") and not key.endswith("ss") else key


@dataclass(frozen=True)
class _Token:
    key: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    """The words of ``text`` in matching form, with their character offsets ("and" dropped)."""
    found = []
    for match in _TOKEN.finditer(text):
        key = _key(match.group())
        if key and key != _CONNECTOR:
            found.append(_Token(key, match.start(), match.end()))
    return found


def _normalise(text: str) -> str:
    """Matching forms of the words, plurals stripped ("Gift Cards" -> "gift card")."""
    return " ".join(_singular(t.key) for t in _tokens(text))


def _squash(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class _Entry:
    """One way a brand or category can be written: its words in matching form."""

    name: str
    words: tuple[str, ...]
    alias: bool = False  # a variant ("Home Depot" for "The Home Depot"), not the name itself


def brand_spellings(brand: str) -> list[_Entry]:
    """The ways a brand can be written: its words, and without a leading "The" when two or more
    words are left ("Home Depot" for "The Home Depot"; "The Counter" needs its "The")."""
    words = tuple(t.key for t in _tokens(brand))
    if not words:
        return []
    spellings = [_Entry(brand, words)]
    rest = words[1:]
    if words[0] == "the" and len(rest) > 1:
        spellings.append(_Entry(brand, rest, alias=True))
    return spellings


def category_spellings(category: str) -> list[_Entry]:
    """A category's words, plurals stripped ("Gift Cards" -> gift card)."""
    words = tuple(_singular(t.key) for t in _tokens(category))
    return [_Entry(category, words)] if words else []


class _Matcher:
    """Brand and category names keyed by their words joined in matching form, so one dict lookup
    per word span finds every name written that way (at most ~20 lookups per word of a message,
    whatever the vocabulary size; one regex per brand cost ~2 s to compile for 329 brands)."""

    def __init__(self, brands: Iterable[str], categories: Iterable[str]) -> None:
        self.brands: dict[str, list[_Entry]] = {}
        self.categories: dict[str, list[_Entry]] = {}
        self.brands_by_key: dict[str, list[str]] = {}
        for brand in brands:
            for entry in brand_spellings(brand):
                self._add(self.brands, entry)
                if not entry.alias:
                    self.brands_by_key.setdefault("".join(entry.words), []).append(brand)
        for category in categories:
            for entry in category_spellings(category):
                self._add(self.categories, entry)
        self.longest = max(map(len, (*self.brands, *self.categories)), default=0)

    @staticmethod
    def _add(index: dict[str, list[_Entry]], entry: _Entry) -> None:
        index.setdefault("".join(entry.words), []).append(entry)


@dataclass(frozen=True)
class Vocabulary:
    """The catalogue's known brands and categories (the only values text can match), and the
    brand words its titles use as ordinary lower-case words."""

    brands: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # brand words the catalogue's titles also use as lower-case words ("apple" in "apple slicer")
    common_words: frozenset[str] = frozenset()

    @classmethod
    def from_metadatas(cls, metadatas: Iterable[dict[str, Any]]) -> Vocabulary:
        brands: set[str] = set()
        categories: set[str] = set()
        titles: list[str] = []
        for meta in metadatas:
            if isinstance(meta.get("brand"), str) and meta["brand"].strip():
                brands.add(meta["brand"])
            if isinstance(meta.get("category"), str) and meta["category"].strip():
                categories.add(meta["category"])
            if isinstance(meta.get("title"), str):
                titles.append(meta["title"])
        brand_words = {t.key for brand in brands for t in _tokens(brand)}
        lower_words = {w for title in titles for w in _TOKEN.findall(title) if w.islower()}
        common = {_key(w) for w in lower_words} & brand_words
        return cls(tuple(sorted(brands)), tuple(sorted(categories)), frozenset(common))

    @cached_property
    def matcher(self) -> _Matcher:
        """The name index, built once per vocabulary."""
        return _Matcher(self.brands, self.categories)

    def canonical_brand(self, name: str) -> str:
        """The catalogue's spelling of a brand (case, punctuation and spacing aside:
        "levis" -> "Levi's"), else the name as given."""
        wanted = name.strip()
        if wanted in self.brands:
            return wanted
        same_key = self.matcher.brands_by_key.get("".join(t.key for t in _tokens(wanted)), [])
        same_case = [b for b in same_key if b.casefold() == wanted.casefold()]
        return next(iter(same_case or same_key), wanted)

    @cached_property
    def name_words(self) -> frozenset[str]:
        """Every (normalised) word of every brand and category name, and every name's words
        written as one ("giftcard", "homedepot"), as the parser matches those too."""
        words = [_normalise(name).split() for name in (*self.brands, *self.categories)]
        aliases = [e.words for b in self.brands for e in brand_spellings(b) if e.alias]
        joined = ["".join(map(_singular, n)) for n in (*words, *aliases)]
        return frozenset([w for name in words for w in name] + joined)

    def could_name(self, word: str) -> bool:
        """Whether ``word`` is part of a brand or category name (text the parser may match)."""
        words = _normalise(word).split()
        return any(w in self.name_words for w in [*words, _singular("".join(words))])

    def canonical_category(self, name: str) -> str:
        wanted = _normalise(name)
        return next((c for c in self.categories if _normalise(c) == wanted), name.strip())

    @cached_property
    def common_brands(self) -> frozenset[str]:
        """Brands whose every word is also an ordinary word ("Best", "At Home", "Target")."""
        common = _COMMON_WORDS | self.common_words
        return frozenset(b for b in self.brands if {t.key for t in _tokens(b)} <= common)


def canonicalise(filters: ProductFilters, vocabulary: Vocabulary) -> ProductFilters:
    """Spell brands and categories as the catalogue does ("samsung" -> "Samsung")."""
    return filters.model_copy(
        update={
            "brands": [vocabulary.canonical_brand(b) for b in filters.brands],
            "exclude_brands": [vocabulary.canonical_brand(b) for b in filters.exclude_brands],
            "categories": [vocabulary.canonical_category(c) for c in filters.categories],
        }
    )


# --- finding brand and category mentions ----------------------------------------------------

BRAND, CATEGORY = "brand", "category"


@dataclass(frozen=True)
class Mention:
    """Words ``first``..``last`` (token indices, inclusive) of a message naming ``names``."""

    kind: str
    names: tuple[str, ...]
    first: int
    last: int
    start: int  # character offsets in the message
    end: int
    letters: int  # letters and digits of the words (the length that decides overlaps)
    exact: bool = False  # written exactly as (one of) the names, case included


def candidate_mentions(text: str, vocabulary: Vocabulary) -> list[Mention]:
    """Every word span of ``text`` that is written like a brand or a category name, in matching
    form (case, accents, punctuation, "&"/"and" and spacing aside), overlaps included.

    One dict lookup per span of consecutive words up to the longest name; a brand that is also
    an ordinary word must be capitalised or spelled exactly as the catalogue does."""
    matcher = vocabulary.matcher
    tokens = _tokens(text)
    keys = [t.key for t in tokens]
    singulars = [_singular(k) for k in keys]
    has_lower = any(c.islower() for c in text)
    found: list[Mention] = []
    for first in range(len(tokens)):
        joined = folded = ""
        for last in range(first, len(tokens)):
            joined += keys[last]
            folded += singulars[last]
            if len(folded) > matcher.longest:
                break
            brand_entries = matcher.brands.get(joined)
            category_entries = matcher.categories.get(folded)
            if not brand_entries and not category_entries:
                continue
            start, end = tokens[first].start, tokens[last].end
            surface = _squash(text[start:end])
            span = (first, last, start, end, len(joined))
            if brand_entries:
                names = _written_as(brand_entries, tuple(keys[first : last + 1]), surface)
                names = [n for n in names if _reads_as_brand(n, surface, has_lower, vocabulary)]
                if names:
                    found.append(Mention(BRAND, tuple(names), *span, surface in names))
            if category_entries:
                words = tuple(singulars[first : last + 1])
                names = _written_as(category_entries, words, surface)
                if names:
                    found.append(Mention(CATEGORY, tuple(names), *span, surface in names))
    return found


def _written_as(entries: list[_Entry], words: tuple[str, ...], surface: str) -> list[str]:
    """The names among ``entries`` that ``surface`` (words ``words``) stands for: the exact
    spelling, else the same letters in any case, else every name written this way (a catalogue
    with both "Kohl's" and "Kohls"), names before variants ("The Home Depot" for "home depot")."""
    entries = [e for e in entries if e.words == words or len("".join(words)) >= _MIN_JOINED]
    if not entries:
        return []
    for same in (lambda n: _squash(n) == surface, lambda n: _squash(n).lower() == surface.lower()):
        exact = [e.name for e in entries if same(e.name)]
        if exact:
            return list(dict.fromkeys(exact))
    names = [e.name for e in entries if not e.alias] or [e.name for e in entries]
    return list(dict.fromkeys(names))


def _reads_as_brand(brand: str, surface: str, has_lower: bool, vocabulary: Vocabulary) -> bool:
    """A brand made of ordinary words counts only when spelled exactly as the catalogue does or
    capitalised in a message that is not all capitals ("Best" yes, "your best headphones" no)."""
    if brand not in vocabulary.common_brands or _squash(brand) == surface:
        return True
    return has_lower and any(c.isupper() for c in surface)


def select_mentions(candidates: list[Mention], text: str) -> list[Mention]:
    """The reading of the message: non-overlapping mentions, in message order, chosen by, in turn,
    the most letters covered ("Zusen-Tekka Electronics" is brand + category, not "Zusen" + brand
    "Tekka Electronics"), naming both a brand and a category over one kind only ("Ka Toys" is
    brand "Ka" + category "Toys" when no other category is named, else brand "Ka Toys"), fewer
    mentions ("Brinker/Regal Entertainment" is one brand), more names written exactly as the
    catalogue does ("Vo Home Kitchen" is brand "Vo Home" + "Kitchen" rather than brand "Vo" +
    "Home & Kitchen"), then the preferred reading of a span that reads both ways: the category
    ("$30 gift card"), unless spelled exactly as the brand and not as the category ("Gift Card
    Gift Cards": brand, then category). A brand reading of such a span needs the brand's exact
    spelling.

    A forward dynamic programme over word positions with state (brand named, category named):
    O(words x candidates), whatever the vocabulary."""
    spans: dict[tuple[int, int], dict[str, Mention]] = {}
    for mention in candidates:
        spans.setdefault((mention.first, mention.last), {})[mention.kind] = mention
    starting: dict[int, list[tuple[Mention, int]]] = {}  # first word -> (reading, preferred)
    for readings in spans.values():
        if len(readings) == 1:
            mention = next(iter(readings.values()))
            starting.setdefault(mention.first, []).append((mention, 0))
            continue
        brand, category = readings[BRAND], readings[CATEGORY]
        surface = _squash(text[brand.start : brand.end])
        starting.setdefault(brand.first, []).append(
            (category, int(surface not in brand.names or surface in category.names))
        )
        if surface in brand.names:
            starting[brand.first].append((brand, int(surface not in category.names)))
    last_word = max((m.last for m in candidates), default=-1)
    # state (brand named, category named) -> ((letters, -mentions, exact, preferred), mentions)
    Best = dict[tuple[bool, bool], tuple[tuple[int, int, int, int], tuple[Mention, ...]]]
    at: list[Best] = [{} for _ in range(last_word + 2)]
    at[0][(False, False)] = ((0, 0, 0, 0), ())

    def offer(position: int, state: tuple[bool, bool], score, chosen) -> None:
        if state not in at[position] or score > at[position][state][0]:
            at[position][state] = (score, chosen)

    for position in range(last_word + 1):
        for state, (score, chosen) in at[position].items():
            offer(position + 1, state, score, chosen)
            for mention, preferred in starting.get(position, []):
                named = (state[0] or mention.kind == BRAND, state[1] or mention.kind == CATEGORY)
                gained = (
                    score[0] + mention.letters,
                    score[1] - 1,
                    score[2] + mention.exact,
                    score[3] + preferred,
                )
                offer(mention.last + 1, named, gained, (*chosen, mention))
    final = at[last_word + 1]
    state = max(final, key=lambda s: (final[s][0][0], sum(s), *final[s][0][1:]))
    return list(final[state][1])


# --- the deterministic parser ---------------------------------------------------------------

# an amount; a leading minus counts only when it is no range dash ("10-20")
_NUM = r"((?<![\w.,])[-−–]\s?\d{1,7}(?:[.,]\d{1,2})?|\d{1,7}(?:[.,]\d{1,2})?)"
_MONEY = rf"(?:\$|usd\s*|eur\s*|€|£)?\s*{_NUM}\s*(?:k\b)?(?:\s*(?:dollars?|bucks|usd|euros?))?"
_NOT_STARS = r"(?!\s*(?:\+\s*)?(?:stars?|star\b|rating|/\s*5))"

_RATING_PATTERNS = [
    re.compile(rf"(?:at\s+least|minimum(?:\s+of)?|min\.?)\s+{_NUM}\s*stars?", re.I),
    re.compile(
        rf"{_NUM}\s*(?:\+\s*stars?|stars?\s*\+|\s*stars?\s+(?:and|or)\s+"
        r"(?:up|above|more|higher|better))",
        re.I,
    ),
    re.compile(
        rf"(?:rated|rating(?:\s+of)?)\s+(?:at\s+least\s+|above\s+|over\s+)?{_NUM}"
        r"(?:\s*stars?)?(?:\s+(?:or|and)\s+(?:up|above|more|higher|better))?",
        re.I,
    ),
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
_CURRENCY_ONLY = re.compile(rf"(?:\$|€|£)\s*{_NUM}|{_NUM}\s*(?:dollars?|bucks|usd|euros?)\b", re.I)
_NEGATION = r"(?:not|no|except|excluding|without|but\s+not|other\s+than|anything\s+but)\s+"
_NEGATED_BEFORE = re.compile(rf"\b{_NEGATION}(?:\w+\s+)?$", re.I)
# "not Samsung or LG": a brand listed right after an excluded one is excluded too
_LIST_GLUE = re.compile(r"\s*(?:,|/|&|\band\b|\bor\b|\bnor\b)?\s*(?:\bor\b|\bnor\b)?\s*", re.I)

# --- prompt injection -----------------------------------------------------------------------

# Instructions to the assistant. Each alternative needs words shoppers do not use together
# ("show me your best headphones", "act as a phone stand", "forget the previous one, show me
# tablets", "Other People's Money" are no instruction); tests/chat/test_filters.py lists both.
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:(?:all|any|every|the|your|of|these|"
    r"those|previous|prior|above|earlier|preceding|original|initial|system|existing|current)"
    r"\s+){0,4}(?:instructions?|prompts?|rules|messages|guidelines|directions|directives?|"
    r"constraints|restrictions|programming|guardrails?|system\s+message)\b"
    r"|\b(?:ignore|disregard)\s+(?:all\s+|everything\s+)?(?:the\s+)?(?:above|previous|prior|"
    r"earlier)\s*(?:[.,;:!?]|$|\band\b)"
    r"|\bsystem\s+prompts?\b|\bsystem\s+message\b"
    r"|\b(?:reveal|print|repeat|leak|dump|output|display|show|tell|give|share|expose)\s+"
    r"(?:me\s+|us\s+)?(?:all\s+)?(?:of\s+)?(?:your|the\s+(?:system|hidden|initial|original|"
    r"secret|full|exact))\s+(?:\w+\s+)?(?:prompts?|instructions|rules|guidelines|configuration|"
    r"directives)\b"
    r"|\breveal\s+(?:the\s+|your\s+)?(?:\w+\s+)?(?:prompts?|instructions)\b"
    r"|\b(?:prompts?|instructions)\s+(?:that\s+)?you\s+(?:were|have\s+been|got)\s+given\b"
    r"|\bwhat\s+(?:are|were)\s+your\s+(?:\w+\s+)?(?:instructions|prompts?|guidelines)\b"
    r"|\byou\s+are\s+now\b|\bdeveloper\s+mode\b|\bjailbr(?:oken|eak)\b|\bDAN\s+mode\b"
    r"|\b(?:act|behave|respond)\s+as\s+(?:if\s+you|though\s+you|(?:an?\s+|the\s+|my\s+)?"
    r"(?:\w+\s+)?(?:ai|assistant|bot|chatbot|model|llm|gpt|admin(?:istrator)?|developer|"
    r"hacker|system|root|dan)\b)"
    r"|\bpretend\s+(?:to\s+be|you\s+are|that\s+you)\b|\brole-?play\s+as\b"
    r"|\bnew\s+instructions\s*:"
    r"|\b(?:other|another|all|every)\s+(?:users?|customers?|people|shoppers?)(?:'s|s'|')?\s+"
    r"(?:sessions?|conversations?|chats?|histor(?:y|ies)|messages?|data|orders?|carts?|"
    r"accounts?|e-?mails?|addresses|details|information|searches)\b"
    r"|\b(?:other|another|all|every)\s+(?:sessions|conversations|chats)\b",
    re.I,
)
# Prompt delimiters: our data block's tags, role tags and chat-template tokens.
_DATA_TAGS = frozenset({"customer_message", "user", "message", "human"})
_TAG = re.compile(
    r"<\s*(?P<close>/)?\s*(?P<name>customer_message|user|message|human|system|assistant|"
    r"developer|instructions?|prompt|context|tool|admin)\b[^<>]{0,100}>"
    r"|<\|[^|<>]{0,40}\|>|\[/?INST\]|<</?SYS>>",
    re.I,
)
_ROLE_MARKER = re.compile(r"^[ \t]*(?:system|assistant|developer|admin)[ \t]*:", re.I | re.M)
_CLAUSE_START = re.compile(r"[!?;,\n]|\.(?!\d)")
_SENTENCE_END = re.compile(r"[!?;\n]|\.(?!\d)")


def looks_like_injection(text: str) -> bool:
    """Text that tries to give the system instructions or to close the block it is quoted in."""
    return bool(_injected_spans(text))


def _injected_spans(text: str) -> list[tuple[int, int]]:
    """Character ranges holding instructions: from the start of the clause with an instruction
    (its separator included) to the end of its sentence; from a role marker ("system:") or a
    breakout (closing tag, role tag, template token) to the end of the text (or of a role tag's
    own block). An opening ``<customer_message>`` is only the tag itself."""
    spans = []
    for match in _INJECTION.finditer(text):
        starts = [b.start() for b in _CLAUSE_START.finditer(text, 0, match.start())]
        end = _SENTENCE_END.search(text, match.end())
        spans.append((starts[-1] if starts else 0, end.end() if end else len(text)))
    covered = 0
    for match in _TAG.finditer(text):
        if match.start() < covered:
            continue
        name = (match.group("name") or "").lower()
        if name in _DATA_TAGS and not match.group("close"):
            end = match.end()
        elif name and not match.group("close"):
            closing = re.search(rf"<\s*/\s*{name}\s*>", text[match.end() :], re.I)
            end = match.end() + closing.end() if closing else len(text)
        else:
            end = len(text)
        spans.append((match.start(), end))
        covered = end
    spans.extend((m.start(), len(text)) for m in _ROLE_MARKER.finditer(text))
    return _merged(spans)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


# --- parsing --------------------------------------------------------------------------------


@dataclass
class ParsedText:
    """What the parser read from one message: filters it names, the text left over, whether it
    held instructions (removed before parsing) and what it ignored, in words for the shopper."""

    filters: dict[str, Any] = field(default_factory=dict)
    remainder: str = ""
    suspicious: bool = False
    ignored: list[str] = field(default_factory=list)


def _blank(text: str, start: int, end: int) -> str:
    """``text`` with ``start``..``end`` replaced by spaces (offsets stay valid)."""
    return text[:start] + " " * (end - start) + text[end:]


def _amount(raw: str, match_text: str) -> float:
    value = float(re.sub(r"\s", "", raw).replace("−", "-").replace("–", "-").replace(",", "."))
    if re.search(rf"{re.escape(raw)}\s*k\b", match_text, re.I):
        value *= 1000
    return value


def _numbers(match: re.Match) -> list[str]:
    return [g for g in match.groups() if g is not None]


class _Reader:
    """Rating and price phrases of one message, read on a copy in which brand and category
    mentions are blanked ("1-800-Flowers.com" is no price range); what is read is blanked too
    and its range kept, so the remainder can drop it."""

    def __init__(self, masked: str) -> None:
        self.text = masked
        self.taken: list[tuple[int, int]] = []
        self.found: dict[str, Any] = {}
        self.ignored: list[str] = []

    def take(self, pattern: re.Pattern) -> re.Match | None:
        match = pattern.search(self.text)
        if match is not None:
            self.text = _blank(self.text, match.start(), match.end())
            phrase = match.group(0)
            start = match.start() + len(phrase) - len(phrase.lstrip())
            self.taken.append((start, match.start() + len(phrase.rstrip())))
        return match

    def price(self, name: str, value: float) -> None:
        if value < 0:  # never flipped: "under -5 dollars" is no "under 5"
            self.ignored.append(f"ignored a negative price ({value:g})")
        elif value > MAX_PRICE_VALUE:
            self.ignored.append(f"ignored a price above {MAX_PRICE_VALUE:,.0f} ({value:,.0f})")
        else:
            self.found[name] = value

    def rating(self) -> None:
        for pattern in _RATING_PATTERNS:
            match = self.take(pattern)
            if match is not None:
                value = _amount(_numbers(match)[0], "")
                if 0 <= value <= 5:
                    self.found["min_rating"] = value
                else:
                    self.ignored.append(f"ignored a rating outside 0-5 ({value:g})")
                return
        if self.take(_HIGHLY_RATED) is not None:
            self.found["min_rating"] = 4.0

    def prices(self) -> None:
        match = self.take(_BETWEEN)
        if match is not None:
            low, high = sorted(_amount(n, match.group(0)) for n in _numbers(match)[:2])
            if low >= 0:
                self.price("min_price", low)
            else:  # "between -10 and 20": the cap still stands
                self.ignored.append(f"ignored a negative price ({low:g})")
            self.price("max_price", high)
            return
        match = self.take(_AROUND)
        if match is not None:
            centre = _amount(_numbers(match)[0], match.group(0))
            self.price("max_price", round(centre * 1.2, 2) if centre >= 0 else centre)
            if "max_price" in self.found:
                self.found["min_price"] = round(centre * 0.8, 2)
            return
        match = self.take(_MAX_PRICE)
        if match is not None:
            self.price("max_price", _amount(_numbers(match)[0], match.group(0)))
        match = self.take(_MIN_PRICE)
        if match is not None:
            self.price("min_price", _amount(_numbers(match)[0], match.group(0)))
        if "min_price" not in self.found and "max_price" not in self.found and not self.ignored:
            match = self.take(_CURRENCY_ONLY)
            if match is not None:  # "a $30 gift card": the buyer's budget
                self.price("max_price", _amount(_numbers(match)[0], match.group(0)))


def parse_text(text: str, vocabulary: Vocabulary) -> ParsedText:
    """Filters named in ``text`` ("under $50", "Samsung or LG", "4 stars and up", categories).

    Deterministic and total: any text gives a (possibly empty) result. Instructions hidden in a
    message (prompt injection) are cut out, to the end of their sentence, before anything is
    read: the rest is parsed as usual and the result is marked ``suspicious``.
    """
    injected = _injected_spans(text)
    for start, end in reversed(injected):
        text = text[:start] + " " + text[end:]
    mentions = select_mentions(candidate_mentions(text, vocabulary), text)
    masked = text
    for mention in mentions:
        if any(c.isalpha() for c in text[mention.start : mention.end]):
            masked = _blank(masked, mention.start, mention.end)
    reader = _Reader(masked)
    reader.rating()
    reader.prices()
    found = reader.found
    removed = list(reader.taken)
    # a mention of digits only ("11:11") that a price or rating phrase used is no name
    mentions = [
        m
        for m in mentions
        if any(c.isalpha() for c in text[m.start : m.end])
        or not any(s < m.end and m.start < e for s, e in reader.taken)
    ]

    wanted: list[str] = []
    excluded: list[str] = []
    categories: list[str] = []
    last_excluded: Mention | None = None
    for mention in mentions:
        if mention.kind == CATEGORY:
            categories.extend(mention.names)
            continue
        negation = _NEGATED_BEFORE.search(text[: mention.start])
        if negation is not None:
            removed.append((negation.start(), mention.end))
        elif last_excluded is not None and _LIST_GLUE.fullmatch(
            text[last_excluded.end : mention.start]
        ):
            removed.append((last_excluded.end, mention.end))
        else:
            wanted.extend(mention.names)  # stays in the text: the name helps retrieval too
            last_excluded = None
            continue
        excluded.extend(mention.names)
        last_excluded = mention
    if wanted:
        found["brands"] = list(dict.fromkeys(wanted))
    if excluded:
        found["exclude_brands"] = list(dict.fromkeys(excluded))
    if categories:
        found["categories"] = list(dict.fromkeys(categories))
    if (
        found.get("min_price") is not None
        and found.get("max_price") is not None
        and found["min_price"] > found["max_price"]
    ):
        found.pop("min_price")  # "over 80 but under 50": keep the cap the buyer stated last
    remainder = text
    for start, end in removed:
        remainder = _blank(remainder, start, end)
    ignored = reader.ignored
    if injected:
        ignored = ["ignored instructions to the assistant in the message", *ignored]
    return ParsedText(found, _squash(remainder), bool(injected), ignored)


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
