"""The rules of one catalogue item, one home for the dataset tooling and the serving API.

An item enters the platform two ways: a row of ``items.csv`` (the ingest, :mod:`Prod.datasets`)
or a record sent to the serving engine's catalogue API (:mod:`Prod.als_reco_engine.catalogue`).
Both apply these functions, so an item written through the API and one loaded from a file cannot
differ:

- records: :func:`check_records`, the row rules and messages of ``users.csv`` / ``items.csv``
  (ids, title, price, rating), then the text cleaning of :mod:`Prod.common.item_cleaning`;
- text: :func:`product_text`, the readable sentences of a product (``ProductsRAG.json``
  ``text``, :func:`products_rag`), and :func:`embedding_text`, the part of it that is embedded;
- Chroma ``products``: :func:`content_hash`, :func:`product_metadata` and, for the collection,
  :func:`vectors_id`, :func:`collection_metadata`, :func:`embedder_function`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from Prod.common.canonical_format import ITEMS_FILE, MAX_ID_LENGTH, RAG_METADATA_KEYS, USERS_FILE
from Prod.common.item_cleaning import clean_catalogue


class ColumnGroups(NamedTuple):
    """What a file must have and what it may have: optional columns are filled with "" when
    absent (and the Postgres loader then keeps what is stored for them, unless told to clear
    them)."""

    required: tuple[str, ...]
    optional: tuple[str, ...]


USER_COLUMN_GROUPS = ColumnGroups(("user_id",), ("name",))
ITEM_COLUMN_GROUPS = ColumnGroups(
    ("item_id", "title"),
    ("brand", "category", "price", "avg_rating", "rating_count", "description", "image_url"),
)

# title of an item whose title was only markup and that has nothing to rebuild one from
FALLBACK_TITLE = "Product {}"


@dataclass(frozen=True, order=True)
class BadRow:
    """One rejected row: where it is and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Product:
    """One entry of ProductsRAG.json."""

    item_id: str
    text: str
    metadata: dict[str, str | int | float | bool]
    line: int


# --- records: the row rules of users.csv and items.csv --------------------------------------


class RowFlags:
    """Collects reasons for bad rows of one file; positions are row indexes of the frame."""

    def __init__(self, name: str, lines: np.ndarray) -> None:
        self.name = name
        self.lines = lines
        self.reasons: dict[int, list[str]] = {}

    def flag(self, mask, reason: Callable[[int], str]) -> None:
        positions = np.flatnonzero(np.asarray(mask, dtype=bool))
        for pos in positions:
            self.reasons.setdefault(int(pos), []).append(reason(int(pos)))

    def bad_mask(self, n: int) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        if self.reasons:
            mask[list(self.reasons)] = True
        return mask

    def bad_rows(self) -> list[BadRow]:
        return [
            BadRow(self.name, int(self.lines[pos]), "; ".join(reasons))
            for pos, reasons in self.reasons.items()
        ]


def short_repr(value: object, limit: int = 40) -> str:
    """A value quoted for a message, cut after ``limit`` characters."""
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _check_id(flags: RowFlags, values: pd.Series, column: str) -> None:
    arr = values.to_numpy()
    lengths = values.str.len().to_numpy()
    flags.flag(lengths == 0, lambda _: f"{column} is empty")
    flags.flag(lengths > MAX_ID_LENGTH, lambda _: f"{column} longer than {MAX_ID_LENGTH} chars")
    duplicated = values.duplicated(keep="first").to_numpy()
    if duplicated.any():
        first_line = dict(zip(arr[~duplicated], flags.lines[~duplicated], strict=True))
        flags.flag(
            duplicated & (lengths > 0),
            lambda p: (
                f"duplicate {column} {short_repr(arr[p])} (first on line {first_line[arr[p]]})"
            ),
        )


def check_numbers(
    flags: RowFlags,
    values: pd.Series,
    column: str,
    low: float,
    high: float | None,
    low_inclusive: bool = True,
) -> np.ndarray:
    """Float array (NaN where empty); flags non-numbers and values out of range."""
    raw = values.to_numpy(dtype=object)
    # parse each distinct string once: columns like weight/rating repeat a handful of values
    codes, uniques = pd.factorize(raw)
    distinct = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce")
    parsed = distinct.to_numpy(dtype=np.float64)[codes] if len(raw) else np.zeros(0)
    not_finite = ~np.isfinite(parsed)
    bad_number = not_finite.copy()
    bad_number[not_finite] = raw[not_finite] != ""
    flags.flag(bad_number, lambda p: f"{column} {short_repr(raw[p])} is not a number")
    parsed[not_finite] = np.nan
    with np.errstate(invalid="ignore"):
        too_low = parsed < low if low_inclusive else parsed <= low
        too_high = parsed > high if high is not None else np.zeros_like(too_low)
    bounds = f"{'>=' if low_inclusive else '>'} {low:g}" + (
        f" and <= {high:g}" if high is not None else ""
    )
    flags.flag(too_low | too_high, lambda p: f"{column} {raw[p]} must be {bounds}")
    return parsed


def _optional_text(values: pd.Series) -> np.ndarray:
    """Object array; empty string = unknown = None."""
    out = values.to_numpy(dtype=object).copy()
    out[out == ""] = None
    return out


def _strings(values: np.ndarray) -> pd.Series:
    """Plain object column (pandas 3 would infer its slower string dtype)."""
    return pd.Series(values, dtype=object)


def check_users(frame: pd.DataFrame, lines: np.ndarray) -> tuple[pd.DataFrame, RowFlags]:
    """(the good rows of a users.csv frame, typed; the flags of the bad ones)."""
    flags = RowFlags(USERS_FILE, lines)
    _check_id(flags, frame["user_id"], "user_id")
    good = ~flags.bad_mask(len(frame))
    users = pd.DataFrame(
        {
            "user_id": _strings(frame["user_id"].to_numpy()[good]),
            "name": _strings(_optional_text(frame["name"])[good]),
        }
    )
    return users.reset_index(drop=True), flags


def check_items(frame: pd.DataFrame, lines: np.ndarray) -> tuple[pd.DataFrame, RowFlags]:
    """(the good rows of an items.csv frame, typed, not yet cleaned; the flags of the bad ones)."""
    flags = RowFlags(ITEMS_FILE, lines)
    _check_id(flags, frame["item_id"], "item_id")
    flags.flag(frame["title"].str.strip().str.len().to_numpy() == 0, lambda _: "title is empty")
    price = check_numbers(flags, frame["price"], "price", 0, None)
    avg_rating = check_numbers(flags, frame["avg_rating"], "avg_rating", 0, 5)
    rating_count = check_numbers(flags, frame["rating_count"], "rating_count", 0, None)
    raw_count = frame["rating_count"].to_numpy()
    fractional = np.isfinite(rating_count) & (rating_count != np.floor(rating_count))
    flags.flag(fractional, lambda p: f"rating_count {raw_count[p]} is not a whole number")
    good = ~flags.bad_mask(len(frame))
    items = pd.DataFrame(
        {
            "item_id": _strings(frame["item_id"].to_numpy()[good]),
            "title": _strings(frame["title"].to_numpy()[good]),
            "brand": _strings(_optional_text(frame["brand"])[good]),
            "category": _strings(_optional_text(frame["category"])[good]),
            "price": price[good],
            "avg_rating": avg_rating[good],
            "rating_count": np.nan_to_num(rating_count[good], nan=0.0).astype(np.int64),
            "description": _strings(_optional_text(frame["description"])[good]),
            "image_url": _strings(_optional_text(frame["image_url"])[good]),
        }
    )
    return items, flags


def drop_nul_rows(
    name: str, frame: pd.DataFrame, lines: np.ndarray, bad: list[BadRow]
) -> tuple[pd.DataFrame, np.ndarray, list[BadRow]]:
    """Rows with a NUL character are bad rows: PostgreSQL text cannot hold one."""
    has_nul = np.zeros(len(frame), dtype=bool)
    reasons: dict[int, list[str]] = {}
    for column in frame.columns:
        in_column = frame[column].str.contains("\x00", regex=False).to_numpy(dtype=bool)
        for pos in np.flatnonzero(in_column).tolist():
            reasons.setdefault(pos, []).append(f"{column} contains a NUL character")
        has_nul |= in_column
    bad = bad + [BadRow(name, int(lines[pos]), "; ".join(why)) for pos, why in reasons.items()]
    return frame[~has_nul].reset_index(drop=True), lines[~has_nul], bad


def check_records(kind: str, records: pd.DataFrame) -> tuple[pd.DataFrame, list[BadRow]]:
    """The row rules of ``users.csv`` / ``items.csv`` (``kind``: ``users`` or ``items``) applied
    to records given another way: ``records`` holds every column of the file's
    :class:`ColumnGroups` as strings ("" = unknown). Returns (the good rows, typed and cleaned as
    the ingest reads a file; the bad rows, ``line`` = the record's 0-based index)."""
    name = USERS_FILE if kind == "users" else ITEMS_FILE
    lines = np.arange(len(records), dtype=np.int64)
    records, lines, bad = drop_nul_rows(name, records.reset_index(drop=True), lines, [])
    if kind == "users":
        users, flags = check_users(records, lines)
        return users, sorted(bad + flags.bad_rows())
    items, flags = check_items(records, lines)
    items, _ = clean_catalogue(items, fallback_title=FALLBACK_TITLE.format, unknown=None)
    return items, sorted(bad + flags.bad_rows())


# --- product text ---------------------------------------------------------------------------


def products_rag(items: pd.DataFrame) -> list[dict[str, Any]]:
    """One ``{"item_id", "text", "metadata"}`` record per item, unknown metadata omitted."""
    records = []
    for row in items.to_dict("records"):
        record = {
            "item_id": str(row["item_id"]),
            "text": product_text(row),
            "metadata": _rag_metadata(row),
        }
        records.append(record)
    return records


def product_text(item: dict[str, Any]) -> str:
    """Readable sentences describing one product: what the chat engine embeds and quotes."""
    title = field_text(item.get("title"))
    brand = field_text(item.get("brand"))
    category = field_text(item.get("category"))
    price = field_number(item.get("price"))
    avg_rating = field_number(item.get("avg_rating"))
    rating_count = field_number(item.get("rating_count")) or 0
    description = field_text(item.get("description"))

    sentences = [title.rstrip(".") + "."]
    if brand and category:
        sentences.append(f"Brand: {brand}. Category: {category}.")
    elif brand:
        sentences.append(f"Brand: {brand}.")
    elif category:
        sentences.append(f"Category: {category}.")
    if price is not None:
        sentences.append(f"Price: ${price:,.2f}.")
    if avg_rating is not None and rating_count > 0:
        noun = "rating" if int(rating_count) == 1 else "ratings"
        sentences.append(f"Rated {avg_rating:.1f} out of 5 from {int(rating_count):,} {noun}.")
    if description:
        sentences.append(description)
    return " ".join(sentences)


# the price and rating sentences of ``product_text``, exactly as it writes them
_PRICE_OR_RATING_SENTENCE = re.compile(
    r" ?\b(?:Price: \$[\d,]+\.\d{2}|Rated \d+\.\d out of 5 from [\d,]+ ratings?)\.(?= |$)"
)


def embedding_text(text: str) -> str:
    """What the vector search embeds of a product text: ``product_text`` without its price and
    rating sentences. Those are exact metadata filters in Chroma, and a sentence of numbers adds
    little to a semantic match but ~20 of a product's ~86 tokens (~20% of the embedding time).
    Texts in another layout come back unchanged."""
    return _PRICE_OR_RATING_SENTENCE.sub("", text).strip()


def _rag_metadata(row: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for key in RAG_METADATA_KEYS:
        value = row.get(key)
        if key in ("price", "avg_rating"):
            number = field_number(value)
            if number is not None:
                metadata[key] = number
        elif key == "rating_count":
            metadata[key] = int(field_number(value) or 0)
        else:
            text = field_text(value)
            if text:
                metadata[key] = text
    return metadata


def field_text(value: Any) -> str:
    """A field as stripped text; None and NaN (unknown) -> ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def field_number(value: Any) -> float | None:
    """A field as a number; empty, unparsable or NaN (unknown) -> None."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# --- the Chroma products collection ---------------------------------------------------------


HASH_KEY = "content_hash"
EMBEDDER_KEY = "embedder"
# which part of a product text the vectors are of; part of the recorded embedder id
EMBEDDED_TEXT = "text-without-price-rating"
COLLECTION_METADATA = {"hnsw:space": "cosine"}

# texts -> (n, dim) float32 normalised embeddings
Embed = Callable[[list[str]], np.ndarray]


def content_hash(product: Product) -> str:
    """sha256 over the text and the (key-sorted) metadata: any change means re-embedding."""
    canonical = json.dumps(
        {"text": product.text, "metadata": product.metadata}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def product_metadata(product: Product, digest: str) -> dict:
    """What Chroma stores beside the vector (no nulls: Chroma metadata cannot hold them)."""
    return {**product.metadata, HASH_KEY: digest}


def vectors_id(embedder_id: str | None) -> str | None:
    """What the collection records as its vectors' origin: the embedder and the embedded text."""
    return None if embedder_id is None else f"{embedder_id}|{EMBEDDED_TEXT}"


def collection_metadata(embedder_id: str | None) -> dict:
    """Metadata a new ``products`` collection is created with."""
    if embedder_id is None:
        return dict(COLLECTION_METADATA)
    return {**COLLECTION_METADATA, EMBEDDER_KEY: embedder_id}


class ModelEmbed:
    """An :data:`Embed` over a loaded embedder (normalised float32) with its ``embedder_id``."""

    def __init__(self, model, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size
        self.embedder_id: str | None = getattr(model, "embedder_id", None)

    def __call__(self, texts: list[str]) -> np.ndarray:
        from Prod.common.embeddings import embed_texts

        return embed_texts(self.model, texts, batch_size=self.batch_size)


def embedder_function(model, batch_size: int = 256) -> Embed:
    """Wrap an embedder from ``load_embedder`` as an :data:`Embed` with its ``embedder_id``."""
    return ModelEmbed(model, batch_size)
