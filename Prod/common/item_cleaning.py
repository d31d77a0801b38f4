"""Cleaning of catalogue text from real sources: one set of rules for the importers, the ingest
and the catalogue API (:func:`Prod.common.items.check_records`).

Real product metadata (the Amazon 2018 and 2023 dumps above all) carries page furniture: HTML tags
and entities in titles, brands, categories and descriptions, titles that are nothing but a cut-off
tag (``<span class="a-size-medium a-color-secondary"``), brands written "by X", "Visit the X
Store" or "Brand: X", and one brand spelled several ways across a catalogue ("SONY", "Sony").
These functions turn such values into the text a shopper would read.

Rules (each one is tested in ``tests/data/test_cleaning.py``):

- Markup: complete tags of real HTML elements, comments, ``<script>``/``<style>`` blocks and
  cut-off tags (a known element with attributes, or a closing tag, without its ``>``) are
  removed; entities ending in ``;`` are decoded, repeatedly, so double-escaped ``&amp;#39;`` reads
  ``'``. Text that merely contains ``<`` or ``&`` ("I <3 NY", "AT&T", "<Untitled>") is kept.
- Titles that are empty, only markup, only punctuation or page code after cleaning are *rebuilt*
  from the best remaining fields: the first sentence of the description, else brand + category,
  else the brand or the category. Cleaning never turns a value into "unknown" silently: every
  rebuilt title and every value emptied is counted in a :class:`CleaningReport`.
- Brands: page prefixes and suffixes removed, placeholders ("Unknown", "Generic", "N/A") become
  unknown, and spellings that differ only in case or spacing collapse to the catalogue's most
  frequent one.

Everything here is a pure function of its inputs.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

TEXT_COLUMNS = ("title", "brand", "category", "description")
PLACEHOLDERS = frozenset(
    {"unknown", "n/a", "na", "none", "null", "nan", "generic", "unbranded", "no brand", "-"}
)
REBUILT_TITLE_WORDS = 12  # a rebuilt title is at most this many words of a description sentence

# real HTML elements: only these count as tags, so "<Untitled>" or "Size <M>" are kept as text
_ELEMENTS = (
    "a|abbr|address|article|aside|audio|b|big|blockquote|body|br|button|caption|center|cite|code|"
    "col|colgroup|dd|del|div|dl|dt|em|figcaption|figure|font|footer|form|h[1-6]|head|header|hr|"
    "html|i|iframe|img|input|ins|kbd|label|li|link|main|meta|nav|noscript|ol|option|p|picture|"
    "pre|q|s|samp|section|select|small|source|span|strike|strong|sub|sup|svg|table|tbody|td|"
    "tfoot|th|thead|tr|tt|u|ul|video|wbr"
)
_ATTRIBUTE = r"""\s+[\w:.-]+\s*=\s*(?:"[^"]*"?|'[^']*'?|[^\s"'<>]*)"""
_BLOCKS = re.compile(r"<(script|style)\b[^>]*>.*?(?:</\1\s*>|$)", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_TAG = re.compile(rf"""</?(?:{_ELEMENTS})\b(?:"[^"]*"|'[^']*'|[^"'<>])*>""", re.IGNORECASE)
# a tag cut off before its ">": an element with at least one name=value attribute (so "save <a
# lot" is text), or a closing tag
_CUT_TAG = re.compile(
    rf"<(?:{_ELEMENTS})(?:{_ATTRIBUTE})+\s*/?|</(?:{_ELEMENTS})\b\s*", re.IGNORECASE
)
# what a removed cut-off tag leaves at the start: `<span class="x". Brand: ...` -> `. Brand: ...`
_LEADING_RESIDUE = re.compile(r"^[\s.,;:|>/-]+")
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACE = re.compile(r"\s+")
_MARKUP_HINT = re.compile(rf"</?(?:{_ELEMENTS}|script|style)\b|<!--|&#?\w+;", re.IGNORECASE)
# page code that ends up in title fields: JavaScript statements, CSS rules, bare class lists
_CODE = re.compile(
    r"\bvar\s+\w+\s*=|\bfunction\s*\(|getTime\(\)|^[.#]?[\w-]+\s*\{[^}]*:|"
    r"^(?:a-[\w-]+\s*)+$",
    re.IGNORECASE,
)
_WORD_OR_NUMBER = re.compile(r"\w", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_BRAND_WRAPPERS = (
    re.compile(r"^visit\s+the\s+(.+?)\s+store$", re.IGNORECASE),
    re.compile(r"^visit\s+amazon'?s\s+(.+?)\s+page$", re.IGNORECASE),
    re.compile(r"^(?:brand(?:\s+name)?|manufacturer|store)\s*:\s*(.+)$", re.IGNORECASE),
    re.compile(r"^by\s*:?\s+(.+)$", re.IGNORECASE),
)


def strip_markup(value: Any) -> str:
    """``value`` as plain text: markup removed, entities decoded, whitespace collapsed.

    ``None``/NaN give ``""``; a list is joined with spaces (the Amazon description and category
    fields are lists). Tags are replaced by a space so "a<br>b" reads "a b".
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value if v is not None and v == v)
    text = str(value)
    if "<" in text or "&" in text:
        original = text
        for _ in range(3):  # entities may hide tags (&lt;b&gt;) or more entities (&amp;amp;)
            decoded = _decode_entities(_remove_tags(text))
            if decoded == text:
                break
            text = decoded
        if text != original:
            text = _LEADING_RESIDUE.sub("", text)
    text = _INVISIBLE.sub("", text)
    return _SPACE.sub(" ", text).strip()


def _remove_tags(text: str) -> str:
    text = _COMMENT.sub(" ", _BLOCKS.sub(" ", text))
    return _CUT_TAG.sub(" ", _TAG.sub(" ", text))


def _decode_entities(text: str) -> str:
    return _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)


def has_markup(value: Any) -> bool:
    """Whether ``value`` (a string or a list of strings) holds HTML tags or entities."""
    if isinstance(value, list | tuple):
        return any(has_markup(v) for v in value)
    return isinstance(value, str) and _MARKUP_HINT.search(value) is not None


def clip(text: str, limit: int | None) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, "..." included (None:
    whole). Clipping twice changes nothing."""
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:") + "..."


def clean_text(value: Any, limit: int | None = None) -> str:
    """:func:`strip_markup`, then :func:`clip` to ``limit`` characters."""
    return clip(strip_markup(value), limit)


def clean_brand(value: Any, limit: int | None = None) -> str:
    """A brand or store name as a shopper would write it.

    "by\\n  Visa" -> "Visa", "Visit the Howard Store" -> "Howard", "Brand: Acme" -> "Acme";
    placeholders ("Unknown", "Generic", "N/A") -> "". A brand that ends in "Store" on its own
    ("The Container Store") keeps it: only the "Visit the ... Store" wrapper is removed.
    """
    text = strip_markup(value)
    for _ in range(2):  # "Visit the Brand: X Store" is rare but real
        for wrapper in _BRAND_WRAPPERS:
            match = wrapper.match(text)
            if match:
                text = match.group(1).strip()
    text = text.strip(" \"'`,;:|")
    if text.casefold() in PLACEHOLDERS or not _WORD_OR_NUMBER.search(text):
        return ""
    return clip(text, limit)


def brand_key(brand: str) -> str:
    """What two spellings of one brand share: case, spacing and quote style ignored."""
    text = brand.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    return _SPACE.sub(" ", text).strip().casefold()


def brand_spellings(brands: Iterable[str]) -> dict[str, str]:
    """``{spelling: preferred spelling}`` for every brand spelled more than one way.

    Spellings are grouped by :func:`brand_key`; the preferred one is the most frequent, ties
    going to a mixed-case spelling ("Sony" over "SONY"/"sony"), then to the alphabetically first.
    Brands with a single spelling are not in the result.
    """
    counts = Counter(b for b in brands if isinstance(b, str) and b)
    groups: dict[str, list[str]] = {}
    for spelling in counts:
        groups.setdefault(brand_key(spelling), []).append(spelling)
    mapping: dict[str, str] = {}
    for spellings in groups.values():
        if len(spellings) < 2:
            continue
        preferred = min(spellings, key=lambda s: (-counts[s], s.isupper() or s.islower(), s))
        mapping.update({s: preferred for s in spellings if s != preferred})
    return mapping


def is_junk_title(title: str) -> bool:
    """Whether a cleaned title says nothing: empty, a placeholder, only punctuation, page code.

    Numbers are real titles ("1917", "300"); a title needs a letter or a digit, not a word.
    """
    text = title.strip()
    if text[:1].isalnum() and not text.startswith("a-") and not any(c in text for c in "{(="):
        return text.casefold() in PLACEHOLDERS  # the common case, without a regex
    return (
        not _WORD_OR_NUMBER.search(text)
        or text.casefold() in PLACEHOLDERS
        or _CODE.search(text) is not None
    )


def first_sentence(text: str, max_words: int = REBUILT_TITLE_WORDS) -> str:
    """The first sentence of ``text`` without its final stop, cut to ``max_words`` words."""
    text = _SPACE.sub(" ", text).strip()
    if not text:
        return ""
    sentence = _SENTENCE_END.split(text, maxsplit=1)[0].rstrip(" .!?;:,")
    words = sentence.split()
    if len(words) > max_words:
        sentence = " ".join(words[:max_words]).rstrip(" ,;:-") + "..."
    return sentence


def rebuild_title(*, description: str = "", brand: str = "", category: str = "") -> str:
    """A title from the best remaining fields of a product whose title is junk.

    The first sentence of the description (specific to the product), else "<brand> <category>",
    else the brand or the category alone; ``""`` when there is nothing to build from.
    """
    sentence = first_sentence(strip_markup(description))
    if sentence and not is_junk_title(sentence):
        return sentence
    brand, category = strip_markup(brand), strip_markup(category)
    if brand and category:
        return category if brand.casefold() in category.casefold() else f"{brand} {category}"
    return brand or category


@dataclass
class CleaningReport:
    """What cleaning changed, per text column.

    ``fields_cleaned``: values whose markup, entities, page wrappers or spacing were removed.
    ``values_emptied``: of those, the values that were only markup or a placeholder (optional
    columns: now unknown; titles: rebuilt).
    ``titles_rebuilt``: junk titles replaced by :func:`rebuild_title` or the fallback title.
    ``brands_merged``: brand values respelled to their catalogue's preferred spelling.
    """

    fields_cleaned: Counter = field(default_factory=Counter)
    values_emptied: Counter = field(default_factory=Counter)
    titles_rebuilt: int = 0
    brands_merged: int = 0

    def add(self, other: CleaningReport) -> CleaningReport:
        """Both reports summed (a new report)."""
        return CleaningReport(
            self.fields_cleaned + other.fields_cleaned,
            self.values_emptied + other.values_emptied,
            self.titles_rebuilt + other.titles_rebuilt,
            self.brands_merged + other.brands_merged,
        )

    def as_dict(self) -> dict[str, int]:
        """Flat counts for an import or ingest report (zero columns left out of the detail)."""
        flat = {
            "titles_rebuilt": self.titles_rebuilt,
            "fields_cleaned": sum(self.fields_cleaned.values()),
            "brands_merged": self.brands_merged,
            "values_emptied": sum(self.values_emptied.values()),
        }
        for column, count in sorted(self.fields_cleaned.items()):
            if count:
                flat[f"{column}_cleaned"] = count
        return flat


def _unknown(value: Any) -> bool:
    """None, NaN, pandas NA or the empty string: what the canonical frames use for unknown."""
    if isinstance(value, str):
        return value == ""
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def clean_catalogue(
    items: pd.DataFrame,
    *,
    fallback_title: Callable[[str], str],
    limits: Mapping[str, int] | None = None,
    unknown: str | None = "",
) -> tuple[pd.DataFrame, CleaningReport]:
    """``items`` (columns ``item_id``, ``title`` and any of brand/category/description) cleaned.

    Only values that need it are touched (markup, entities, wrappers, odd spacing), each distinct
    value once, so a clean catalogue passes through unchanged and fast. Descriptions without
    markup keep their line breaks. Junk titles are rebuilt (:func:`rebuild_title`, else
    ``fallback_title(item_id)``); emptied optional values become ``unknown``. ``limits`` cuts
    columns to a number of characters (importers; ingest passes none). Returns a new frame.
    """
    items = items.copy()
    limits = limits or {}
    report = CleaningReport()
    for column in TEXT_COLUMNS:
        if column not in items.columns:
            continue
        items[column], changed, emptied = _clean_column(
            items[column], column=column, limit=limits.get(column), unknown=unknown
        )
        report.fields_cleaned[column] += changed
        report.values_emptied[column] += emptied

    titles = items["title"].to_numpy(dtype=object)
    junk = np.fromiter(
        (_unknown(t) or is_junk_title(str(t)) for t in titles), dtype=bool, count=len(titles)
    )
    if junk.any():
        rows = items.loc[junk]
        rebuilt = [
            clip(
                rebuild_title(
                    description=_text_or_empty(row.get("description")),
                    brand=_text_or_empty(row.get("brand")),
                    category=_text_or_empty(row.get("category")),
                )
                or fallback_title(str(row["item_id"])),
                limits.get("title"),
            )
            for row in rows.to_dict("records")
        ]
        items.loc[junk, "title"] = pd.Series(rebuilt, index=rows.index, dtype=object)
        report.titles_rebuilt = int(junk.sum())

    if "brand" in items.columns:
        brands = items["brand"]
        mapping = brand_spellings(b for b in brands if isinstance(b, str))
        if mapping:
            respelled = [mapping.get(b, b) if isinstance(b, str) else b for b in brands]
            report.brands_merged = sum(isinstance(b, str) and b in mapping for b in brands)
            items["brand"] = pd.Series(respelled, index=brands.index, dtype=object)
    return items, report


def _text_or_empty(value: Any) -> str:
    return "" if _unknown(value) else str(value)


def _clean_value(value: str, column: str, limit: int | None) -> str:
    if column == "brand":
        return clean_brand(value, limit)
    if column == "description" and not has_markup(value):
        return clip(value.strip(), limit)  # plain descriptions keep their line breaks
    return clean_text(value, limit)


# characters that can make a value need cleaning; values without any are skipped unread
_NEEDS_LOOK = re.compile(r"[<&\t\n\r\u00a0\u200b\u200c\u200d\u2060\ufeff\u00ad]|\s\s|^\s|\s$")


def _clean_column(
    values: pd.Series, *, column: str, limit: int | None, unknown: str | None
) -> tuple[pd.Series, int, int]:
    """(cleaned column, values changed, of which emptied); cleans each distinct value once.

    Brands are all looked at (their wrappers carry no markup); other columns only when they
    hold ``<``, ``&``, odd spacing or run past ``limit``."""
    raw = values.to_numpy(dtype=object)
    codes, uniques = pd.factorize(raw)  # unknown (None/NaN) -> -1
    if len(uniques) == 0:  # every value unknown: nothing to clean
        return values, 0, 0
    new = np.asarray(uniques, dtype=object).copy()
    changed_u = np.zeros(len(uniques), dtype=bool)
    for index, value in enumerate(uniques):
        if not isinstance(value, str) or value == "":
            continue
        if column != "brand" and not (
            _NEEDS_LOOK.search(value) or (limit is not None and len(value) > limit)
        ):
            continue
        after = _clean_value(value, column, limit)
        if after != value:
            changed_u[index] = True
            new[index] = after or unknown
    emptied_u = changed_u & np.array([v is unknown or v == "" for v in new], dtype=bool)
    known = codes >= 0
    changed_rows = known & changed_u[np.where(known, codes, 0)]
    out = raw.copy()
    out[changed_rows] = new[codes[changed_rows]]
    emptied = int((known & emptied_u[np.where(known, codes, 0)]).sum())
    return pd.Series(out, index=values.index, dtype=object), int(changed_rows.sum()), emptied


# the labelled sentences of a canonical product text (``items.product_text``): not prose
_LABELLED_SENTENCE = re.compile(
    r"(?:^|(?<=\s))(?:Brand|Category): [^.]*\.|Price: \$[\d,]+\.\d{2}\."
    r"|Rated \d+\.\d out of 5 from [\d,]+ ratings?\."
)


def clean_products(
    products: Iterable[tuple[str, str, Mapping[str, Any]]],
    *,
    fallback_title: Callable[[str], str],
) -> tuple[list[tuple[str, str, dict[str, Any]]], CleaningReport]:
    """Embedded product records ``(item_id, text, metadata)`` cleaned by the catalogue rules.

    The metadata's title, brand and category follow :func:`clean_catalogue` (junk titles
    rebuilt from the text's prose, brand spellings merged across the records); the text loses
    its markup, and when the title was rebuilt the text starts with the new title, as
    ``items.product_text`` writes it. Emptied metadata values are dropped (the metadata
    cannot hold null) and counted in ``values_emptied``.
    """
    records = list(products)
    frame = pd.DataFrame(
        {
            "item_id": [item_id for item_id, _, _ in records],
            "title": [_text_or_empty(m.get("title")) for _, _, m in records],
            "brand": [
                m.get("brand") if isinstance(m.get("brand"), str) else "" for *_, m in records
            ],
            "category": [
                m.get("category") if isinstance(m.get("category"), str) else "" for *_, m in records
            ],
            "description": [text for _, text, _ in records],
        },
        dtype=object,
    )
    prose = frame["description"].map(lambda t: _LABELLED_SENTENCE.sub(" ", strip_markup(t)))
    raw_titles = frame["title"].copy()
    cleaned, report = clean_catalogue(
        frame.assign(description=prose), fallback_title=fallback_title
    )
    texts, _, _ = _clean_column(frame["description"], column="description", limit=None, unknown="")
    report.fields_cleaned["description"] = 0  # the prose above is a helper, not a field
    report.values_emptied["description"] = 0
    report.fields_cleaned["text"] = int((texts != frame["description"]).sum())
    out = []
    for pos, (item_id, _, metadata) in enumerate(records):
        metadata = dict(metadata)
        for column in ("title", "brand", "category"):
            value = cleaned[column].iat[pos]
            if value:
                metadata[column] = value
            elif column in metadata and isinstance(metadata[column], str):
                del metadata[column]  # only markup or a placeholder: counted as emptied
        text = texts.iat[pos]
        title = cleaned["title"].iat[pos]
        if title != strip_markup(raw_titles.iat[pos]) or not text:
            text = f"{title.rstrip('.')}. {text}".strip()  # the rebuilt title leads the text
        out.append((item_id, text, metadata))
    return out, report
