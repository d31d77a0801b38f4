"""Importers from public dataset formats into the canonical format.

Supported sources (the format is detected from the files in the folder; ``.gz`` copies work too):

- Amazon Reviews 2018: ``*_5.json`` (or any non-meta ``*.json``) review lines with ``reviewerID``,
  ``asin``, ``overall``, ``unixReviewTime``; ``meta_*.json`` lines with ``asin``, ``title``,
  ``brand``, ``price`` ("$12.99", a range or junk), ``category`` (list), ``description`` (list),
  ``imageURL``/``imageURLHighRes``.
- Amazon Reviews 2023: ``*.jsonl`` review lines with ``user_id``, ``parent_asin``/``asin``,
  ``rating``, ``timestamp`` (ms); ``meta_*.jsonl`` with ``parent_asin``, ``title``, ``store``,
  ``price`` (number or null), ``average_rating``, ``rating_number``, ``categories``,
  ``description`` (list), ``images``.
- Amazon Reviews 2023 reviews as CSV (``*.csv``, no ``meta_`` prefix, told apart by its header:
  ``user_id``, ``asin`` and/or ``parent_asin``, ``rating``, ``timestamp``; the full export adds
  ``title``, ``text``, ``images``, ``helpful_vote``, ``verified_purchase``): quoted fields may hold
  commas and line breaks; ``timestamp`` is epoch milliseconds or a datetime string
  ("2020-05-05 14:08:48.923", no offset = UTC). Read exactly as the JSONL reviews (same columns,
  same rules); the metadata still comes from ``meta_*.jsonl`` (the 2023 release has no meta CSV).
  A folder with both review files is read from the JSONL.
- MovieLens 100k: ``u.data`` (tab-separated user, item, rating, timestamp) and ``u.item``
  (pipe-separated, latin-1, 19 genre flags).
- MovieLens latest / 20m / 25m style: ``ratings.csv`` + ``movies.csv`` (genres "A|B").

Every rating becomes an interaction with ``event=rating`` and ``weight=rating``. Items reviewed
but missing from the metadata still get a row (fallback title). ``avg_rating``/``rating_count``
are derived from the ratings when the source has none.

Text is cleaned with the shared rules of :mod:`Prod.common.item_cleaning`: HTML and entities
removed from titles, brands, categories and descriptions, junk titles rebuilt from the other
fields, brand wrappers removed and case variants merged. The report counts what changed
(``titles_rebuilt``, ``fields_cleaned`` and per-column ``*_cleaned``, ``brands_merged``,
``values_emptied``).
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from Prod.common.canonical_format import ITEM_COLUMNS, MAX_ID_LENGTH, RATING_EVENT
from Prod.common.errors import InvalidInput
from Prod.common.item_cleaning import (
    CleaningReport,
    clean_brand,
    clean_catalogue,
    clean_text,
    has_markup,
    strip_markup,
)

MAX_DESCRIPTION_CHARS = 1000
MAX_TITLE_CHARS = 300
TEXT_LIMITS = {
    "title": MAX_TITLE_CHARS,
    "brand": MAX_ID_LENGTH,
    "description": MAX_DESCRIPTION_CHARS,
}
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
NO_GENRE = "(no genres listed)"
# a CSV is an Amazon 2023 review file when its header has all of these and an item column
AMAZON_2023_CSV_REQUIRED = ("user_id", "rating", "timestamp")
AMAZON_2023_CSV_ITEM = ("parent_asin", "asin")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class ImportedDataset:
    """Canonical frames plus what the import saw (format, rows read and dropped)."""

    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    source_format: str
    report: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.source_format,
            "users": len(self.users),
            "items": len(self.items),
            "interactions": len(self.interactions),
            **self.report,
        }


# --------------------------------------------------------------------------------------------
# Amazon


def detect_amazon_format(source: Path) -> str:
    """``"amazon-2018"``, ``"amazon-2023"`` (JSONL reviews) or ``"amazon-2023-csv"`` (reviews
    CSV) from the file names in ``source`` (and, for a CSV, its header)."""
    if _find(source, ["*.jsonl", "*.jsonl.gz"], meta=False):
        return "amazon-2023"
    if _amazon_2023_csv(source):
        return "amazon-2023-csv"
    if _find(source, ["*.json", "*.json.gz"], meta=False):
        return "amazon-2018"
    raise InvalidInput(
        f"{source}: no Amazon review file found (expected *_5.json / *.json for 2018, "
        "*.jsonl or a reviews *.csv with user_id, parent_asin/asin, rating, timestamp columns "
        "for 2023, optionally .gz)"
    )


def import_amazon(source: str | Path, *, reviewed_only: bool = False) -> ImportedDataset:
    """Amazon reviews (2018 or 2023, auto-detected) into canonical frames.

    ``reviewed_only`` keeps only items that have at least one review; by default the whole
    metadata catalogue is kept (the chat engine can recommend items nobody rated yet).
    """
    source = _existing_dir(source)
    fmt = detect_amazon_format(source)
    if fmt == "amazon-2018":
        reviews, meta = _amazon_2018(source)
    elif fmt == "amazon-2023-csv":
        reviews, meta = _amazon_2023(source, _csv_records(_amazon_2023_csv(source)[0]))
    else:
        review_file = _review_file(source, ["*.jsonl", "*.jsonl.gz"])
        reviews, meta = _amazon_2023(source, _json_lines(review_file))
    return _assemble_amazon(reviews, meta, fmt, reviewed_only)


def _amazon_2018(source: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    review_file = _review_file(source, ["*_5.json", "*_5.json.gz", "*.json", "*.json.gz"])
    reviews = pd.DataFrame(
        {
            "user_id": rec.get("reviewerID"),
            "item_id": rec.get("asin"),
            "rating": rec.get("overall"),
            "timestamp": rec.get("unixReviewTime"),
            "name": rec.get("reviewerName"),
        }
        for rec in _json_lines(review_file)
    )
    meta_file = _find(source, ["meta_*.json", "meta_*.json.gz"], meta=True)
    rows = []
    for rec in _json_lines(meta_file[0]) if meta_file else []:
        rows.append(
            {
                "item_id": rec.get("asin"),
                **_text_fields(
                    title=rec.get("title"),
                    brands=[rec.get("brand")],
                    categories=rec.get("category"),
                    main_category=rec.get("main_cat"),
                    description=rec.get("description"),
                    features=rec.get("feature"),
                ),
                "price": parse_price(rec.get("price")),
                "avg_rating": np.nan,
                "rating_count": np.nan,
                "image_url": _first_url(rec.get("imageURLHighRes"))
                or _first_url(rec.get("imageURL")),
            }
        )
    return reviews, pd.DataFrame(rows)


def _amazon_2023(
    source: Path, records: Iterator[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reviews from ``records`` (JSONL or CSV: one mapping for both) and ``meta_*.jsonl``."""
    reviews = pd.DataFrame(
        (
            {
                "user_id": rec.get("user_id"),
                "item_id": rec.get("parent_asin") or rec.get("asin"),
                "rating": rec.get("rating"),
                "timestamp": _review_seconds(rec.get("timestamp")),
                "name": None,
            }
            for rec in records
        ),
        columns=["user_id", "item_id", "rating", "timestamp", "name"],
    )
    meta_file = _find(source, ["meta_*.jsonl", "meta_*.jsonl.gz"], meta=True)
    rows = []
    for rec in _json_lines(meta_file[0]) if meta_file else []:
        details = rec.get("details") if isinstance(rec.get("details"), dict) else {}
        rows.append(
            {
                "item_id": rec.get("parent_asin") or rec.get("asin"),
                **_text_fields(
                    title=rec.get("title"),
                    brands=[rec.get("store"), details.get("Brand")],
                    categories=rec.get("categories"),
                    main_category=rec.get("main_category"),
                    description=rec.get("description"),
                    features=rec.get("features"),
                ),
                "price": parse_price(rec.get("price")),
                "avg_rating": _number_or_nan(rec.get("average_rating")),
                "rating_count": _number_or_nan(rec.get("rating_number")),
                "image_url": _image_2023(rec.get("images")),
            }
        )
    return reviews, pd.DataFrame(rows)


def _text_fields(
    *,
    title: Any,
    brands: list[Any],
    categories: Any,
    main_category: Any,
    description: Any,
    features: Any,
) -> dict[str, str]:
    """Cleaned title, brand (the first usable of ``brands``), category and description of one
    metadata record, plus ``_cleaned_<column>`` flags saying which of them needed cleaning."""
    brand_raw = next((b for b in brands if clean_brand(b)), None)
    brand = clean_brand(brand_raw, limit=MAX_ID_LENGTH)
    # a brand that was only a placeholder or markup ("Unknown", "<br>"): now unknown, counted
    brand_emptied = not brand and any(_plain(b) for b in brands if isinstance(b, str))
    category = leaf_category(categories)
    category_raw = categories
    if not category:
        category, category_raw = clean_text(main_category), main_category
    description_text = _description(description, features)
    description_raw = description if clean_text(description) else features
    return {
        "title": clean_text(title, limit=MAX_TITLE_CHARS),
        "brand": brand,
        "category": category,
        "description": description_text,
        "_cleaned_title": has_markup(title),
        "_cleaned_brand": brand_emptied or (brand_raw is not None and brand != _plain(brand_raw)),
        "_cleaned_category": has_markup(category_raw),
        "_cleaned_description": has_markup(description_raw),
        "_emptied_brand": brand_emptied,
    }


def _plain(value: Any) -> str:
    """``value`` as a string with its spacing collapsed: what it reads like uncleaned."""
    return " ".join(str(value).split())


def _assemble_amazon(
    reviews: pd.DataFrame, meta: pd.DataFrame, fmt: str, reviewed_only: bool
) -> ImportedDataset:
    ratings, report = _clean_ratings(reviews)
    if meta.empty:
        meta = pd.DataFrame(columns=ITEM_COLUMNS)
    meta = meta.assign(item_id=_clean_ids(meta["item_id"]))
    meta = meta[meta["item_id"].notna()].assign(item_id=lambda m: m["item_id"].astype(object))
    report["meta_duplicates_dropped"] = int(meta["item_id"].duplicated().sum())
    meta = meta.drop_duplicates("item_id", keep="first")
    meta, cleaning = _clean_meta(meta, fallback_title="Amazon product {}")
    report.update(cleaning.as_dict())
    items = _with_missing_items(meta, ratings, fallback_title="Amazon product {}")
    if reviewed_only:
        items = items[items["item_id"].isin(ratings["item_id"])]
    items = _derive_rating_stats(items, ratings)
    report["items_without_metadata"] = int((~items["item_id"].isin(meta["item_id"])).sum())
    users = _users_from(ratings)
    return ImportedDataset(
        users, items.reset_index(drop=True), _rating_events(ratings), fmt, report
    )


def _clean_meta(meta: pd.DataFrame, fallback_title: str) -> tuple[pd.DataFrame, CleaningReport]:
    """The catalogue-wide cleaning (junk titles rebuilt, brand spellings merged), its report
    summed with the per-record flags ``_text_fields`` left (the values were cleaned there)."""
    cleaned = [c for c in meta.columns if c.startswith("_cleaned_")]
    emptied = [c for c in meta.columns if c.startswith("_emptied_")]
    already = CleaningReport(
        fields_cleaned=Counter({c.removeprefix("_cleaned_"): int(meta[c].sum()) for c in cleaned}),
        values_emptied=Counter({c.removeprefix("_emptied_"): int(meta[c].sum()) for c in emptied}),
    )
    meta, report = clean_catalogue(
        meta.drop(columns=cleaned + emptied),
        fallback_title=fallback_title.format,
        limits=TEXT_LIMITS,
    )
    return meta, report.add(already)


# --------------------------------------------------------------------------------------------
# MovieLens


def detect_movielens_format(source: Path) -> str:
    """``"movielens-100k"`` (u.data/u.item), ``"movielens-1m"`` (ratings.dat/movies.dat) or
    ``"movielens-latest"`` (ratings.csv/movies.csv)."""
    if (source / "u.data").exists():
        return "movielens-100k"
    if (source / "ratings.csv").exists():
        return "movielens-latest"
    if (source / "ratings.dat").exists():
        return "movielens-1m"
    raise InvalidInput(
        f"{source}: no MovieLens ratings found (expected u.data + u.item, "
        "ratings.csv + movies.csv, or ratings.dat + movies.dat)"
    )


def import_movielens(source: str | Path) -> ImportedDataset:
    """MovieLens (100k, 1m or latest/20m/25m layouts, auto-detected) into canonical frames."""
    source = _existing_dir(source)
    fmt = detect_movielens_format(source)
    if fmt == "movielens-100k":
        ratings = pd.read_csv(
            source / "u.data",
            sep="\t",
            header=None,
            names=["user_id", "item_id", "rating", "timestamp"],
            dtype=str,
        )
        movies = _ml100k_movies(_required(source / "u.item"))
    elif fmt == "movielens-latest":
        ratings = pd.read_csv(source / "ratings.csv", dtype=str).rename(
            columns={"userId": "user_id", "movieId": "item_id"}
        )
        movies = _movies_csv(_required(source / "movies.csv"))
    else:
        ratings = _read_dat(source / "ratings.dat", ["user_id", "item_id", "rating", "timestamp"])
        raw = _read_dat(_required(source / "movies.dat"), ["movieId", "title", "genres"])
        movies = _movies_from_genre_strings(raw)
    ratings["name"] = None
    clean, report = _clean_ratings(ratings)
    movies, cleaning = _clean_meta(movies, fallback_title="Movie {}")
    report.update(cleaning.as_dict())
    items = _with_missing_items(movies, clean, fallback_title="Movie {}")
    items = _derive_rating_stats(items, clean, raw_ratings=clean["raw_rating"])
    report["items_without_metadata"] = int((~items["item_id"].isin(movies["item_id"])).sum())
    report["ratings_clipped_to_1"] = int((clean["raw_rating"] < 1).sum())
    users = _users_from(clean)
    return ImportedDataset(users, items.reset_index(drop=True), _rating_events(clean), fmt, report)


def _ml100k_movies(path: Path) -> pd.DataFrame:
    genres = _ml100k_genre_names(path.parent)
    columns = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *genres]
    frame = pd.read_csv(
        path,
        sep="|",
        header=None,
        names=columns,
        encoding="latin-1",
        dtype=str,
        keep_default_na=False,
    )
    flags = frame[genres].apply(pd.to_numeric, errors="coerce").fillna(0).astype(bool)
    rows = []
    for record, flag_row in zip(frame.to_dict("records"), flags.to_numpy(), strict=True):
        movie_genres = [g for g, on in zip(genres, flag_row, strict=True) if on and g != "unknown"]
        rows.append(
            _movie_row(
                record["item_id"], record["title"], movie_genres, released=record["release_date"]
            )
        )
    return pd.DataFrame(rows)


def _ml100k_genre_names(folder: Path) -> list[str]:
    """Genre names from u.genre when present (in index order), else the documented list."""
    genre_file = folder / "u.genre"
    if not genre_file.exists():
        return ML100K_GENRES
    pairs = []
    for line in genre_file.read_text(encoding="latin-1").splitlines():
        if "|" in line:
            name, index = line.rsplit("|", 1)
            pairs.append((int(index), name))
    return [name for _, name in sorted(pairs)] or ML100K_GENRES


def _movies_csv(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    return _movies_from_genre_strings(raw)


def _movies_from_genre_strings(raw: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for record in raw.to_dict("records"):
        genres = [g for g in str(record.get("genres", "")).split("|") if g and g != NO_GENRE]
        rows.append(_movie_row(record["movieId"], record["title"], genres))
    return pd.DataFrame(rows)


def _movie_row(item_id: str, title: str, genres: list[str], released: str = "") -> dict:
    raw_title = title
    title = _article_first(clean_text(title, limit=MAX_TITLE_CHARS)) or f"Movie {item_id}"
    year = re.search(r"\((\d{4})\)\s*$", title)
    sentences = []
    if genres:
        sentences.append(f"Genres: {', '.join(genres)}.")
    if released:
        sentences.append(f"Released {released}.")
    elif year:
        sentences.append(f"Released in {year.group(1)}.")
    return {
        "item_id": str(item_id).strip(),
        "title": title,
        "brand": "",
        "category": genres[0] if genres else "",
        "price": np.nan,
        "avg_rating": np.nan,
        "rating_count": np.nan,
        "description": " ".join(sentences),
        "image_url": "",
        "_cleaned_title": has_markup(raw_title),
    }


def _article_first(title: str) -> str:
    """MovieLens files articles last: "Grumpier Old Men, The (1995)" -> "The Grumpier Old Men
    (1995)", which reads (and embeds) like the real title."""
    match = _TRAILING_ARTICLE.match(title)
    if not match:
        return title
    return f"{match.group(2)} {match.group(1)}{match.group(3) or ''}"


_TRAILING_ARTICLE = re.compile(
    r"^(.+?), (The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El|Los|Las)( \(.*\))?$"
)


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    """MovieLens 1m/10m ``::``-separated files (latin-1)."""
    text = _required(path).read_text(encoding="latin-1")
    rows = [line.split("::", len(names) - 1) for line in text.splitlines() if line]
    return pd.DataFrame(rows, columns=names)


# --------------------------------------------------------------------------------------------
# shared cleaning


def leaf_category(value: Any) -> str:
    """The most specific category of a breadcrumb list.

    2018 metadata sometimes appends feature sentences or HTML fragments to the breadcrumb
    (["Gift Cards", "Gift Cards", "No expiration, no fees.", ...]), so the walk stops at the
    first entry that does not look like a category name.
    """
    if not isinstance(value, list):
        text = clean_text(value)
        return text if _looks_like_category(text) else ""
    leaf = ""
    for entry in value:
        text = clean_text(entry)
        if not _looks_like_category(text):
            break
        leaf = text
    return leaf


def _looks_like_category(text: str) -> bool:
    return (
        0 < len(text) <= 60
        and len(text.split()) <= 6
        and not any(mark in text for mark in ".!?$:;<>")
    )


def parse_price(value: Any) -> float:
    """Price in dollars: numbers as they are, "$1,299.00" -> 1299.0, a range "$10 - $25" -> its
    lower bound, anything else (empty, "None", CSS junk) -> NaN. Negative -> NaN."""
    if value is None or isinstance(value, bool):
        return np.nan
    if isinstance(value, int | float):
        return float(value) if np.isfinite(value) and value >= 0 else np.nan
    match = _PRICE.search(str(value))
    if not match or len(str(value)) > 40:  # long strings are page junk that happens to hold "$"
        return np.nan
    return float(match.group(1).replace(",", ""))


_PRICE = re.compile(r"^\s*\$?\s*(\d{1,3}(?:,\d{3})*(?:\.\d+)?|\d+(?:\.\d+)?)\s*(?:-|$|\s)")


def _description(description: Any, features: Any) -> str:
    """The description paragraphs, else the feature bullets as sentences."""
    text = clean_text(description, limit=MAX_DESCRIPTION_CHARS)
    if text or not isinstance(features, list):
        return text
    bullets = [strip_markup(f).rstrip(". ") for f in features]
    return clean_text(" ".join(f"{b}." for b in bullets if b), limit=MAX_DESCRIPTION_CHARS)


def _first_url(value: Any) -> str:
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.startswith("http")), "")
    return value if isinstance(value, str) and value.startswith("http") else ""


def _image_2023(images: Any) -> str:
    if not isinstance(images, list):
        return ""
    for image in images:
        if isinstance(image, dict):
            for key in ("hi_res", "large", "thumb"):
                if _first_url(image.get(key)):
                    return image[key]
    return ""


def _review_seconds(value: Any) -> int | None:
    """Unix seconds of a 2023 review timestamp: epoch milliseconds (a number, or its digits in
    the CSV) or a datetime string ("2020-05-05 14:08:48.923"; no offset = UTC), rounded down as
    the milliseconds are; anything else -> None (the row is invalid)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value // 1000
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text) // 1000
        try:  # tried before to_numeric, whose failure costs ~30 us a row
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return (moment - _EPOCH) // timedelta(seconds=1)
    if not isinstance(value, float | str):
        return None  # null, true/false, lists: not a time
    number = pd.to_numeric(value, errors="coerce")
    return int(number) // 1000 if np.isfinite(number) else None


def _number_or_nan(value: Any) -> float:
    number = pd.to_numeric(value, errors="coerce")
    return float(number) if pd.notna(number) else np.nan


def _clean_ids(values: pd.Series) -> pd.Series:
    """Stripped string ids; missing, empty or longer than MAX_ID_LENGTH -> NA."""
    text = values.astype("string").str.strip()
    return text.where(text.str.len().between(1, MAX_ID_LENGTH))


def _clean_ratings(reviews: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Valid (user, item, rating in 0.5..5, timestamp) rows; repeated (user, item) ratings keep
    the latest, as a re-rating replaces the earlier one."""
    frame = reviews.copy()
    frame["user_id"] = _clean_ids(frame["user_id"])
    frame["item_id"] = _clean_ids(frame["item_id"])
    frame["raw_rating"] = pd.to_numeric(frame["rating"], errors="coerce")
    frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce")
    valid = (
        frame["user_id"].notna()
        & frame["item_id"].notna()
        & frame["raw_rating"].between(0.5, 5.0)
        & frame["timestamp"].notna()
    )
    frame = frame[valid].copy()
    frame["user_id"] = frame["user_id"].astype(object)
    frame["item_id"] = frame["item_id"].astype(object)
    frame["timestamp"] = frame["timestamp"].astype("int64")
    frame = frame.sort_values(["user_id", "item_id", "timestamp"], kind="stable")
    duplicated = frame.duplicated(["user_id", "item_id"], keep="last")
    report = {
        "rows_read": len(reviews),
        "rows_invalid": int((~valid).sum()),
        "duplicate_ratings_dropped": int(duplicated.sum()),
    }
    frame = frame[~duplicated].sort_values(["timestamp", "user_id", "item_id"], kind="stable")
    # the canonical rating scale is 1..5; MovieLens half stars below 1 count as 1
    frame["rating"] = frame["raw_rating"].clip(lower=1.0, upper=5.0)
    return frame.reset_index(drop=True), report


def _rating_events(ratings: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ratings["user_id"],
            "item_id": ratings["item_id"],
            "event": RATING_EVENT,
            "rating": ratings["rating"],
            "weight": ratings["rating"],
            "timestamp": ratings["timestamp"],
        }
    )


def _with_missing_items(
    meta: pd.DataFrame, ratings: pd.DataFrame, fallback_title: str
) -> pd.DataFrame:
    """The metadata rows plus one row per rated item the metadata lacks (fallback title)."""
    meta = meta.copy()
    meta["item_id"] = meta["item_id"].astype(str).str.strip()
    missing = sorted(set(ratings["item_id"]) - set(meta["item_id"]))
    extra = pd.DataFrame({"item_id": missing, "title": [fallback_title.format(i) for i in missing]})
    items = pd.concat([meta, extra], ignore_index=True) if missing else meta
    empty_title = items["title"].fillna("").astype(str).str.strip() == ""
    items.loc[empty_title, "title"] = items.loc[empty_title, "item_id"].map(fallback_title.format)
    return items


def _derive_rating_stats(
    items: pd.DataFrame, ratings: pd.DataFrame, raw_ratings: pd.Series | None = None
) -> pd.DataFrame:
    """Fill unknown avg_rating / rating_count from the ratings (mean of the source's scale)."""
    values = raw_ratings if raw_ratings is not None else ratings["rating"]
    stats = values.groupby(ratings["item_id"]).agg(["mean", "size"])
    items = items.copy()
    mean = items["item_id"].map(stats["mean"])
    size = items["item_id"].map(stats["size"])
    items["avg_rating"] = pd.to_numeric(items["avg_rating"], errors="coerce").fillna(mean.round(2))
    items["rating_count"] = (
        pd.to_numeric(items["rating_count"], errors="coerce").fillna(size).fillna(0).astype("int64")
    )
    return items


def _users_from(ratings: pd.DataFrame) -> pd.DataFrame:
    """One row per rating user, with the most recent non-empty name the source gives."""
    named = ratings[ratings["name"].notna()]
    names = named.groupby("user_id")["name"].last().map(lambda v: clean_text(v, limit=128))
    user_ids = pd.unique(ratings["user_id"])
    return pd.DataFrame({"user_id": user_ids, "name": pd.Series(user_ids).map(names).fillna("")})


# --------------------------------------------------------------------------------------------
# files


def _existing_dir(source: str | Path) -> Path:
    path = Path(source)
    if not path.is_dir():
        raise InvalidInput(f"{path}: not a folder")
    return path


def _required(path: Path) -> Path:
    if not path.exists():
        raise InvalidInput(f"{path}: missing file")
    return path


def _find(source: Path, patterns: list[str], meta: bool) -> list[Path]:
    found = sorted({p for pattern in patterns for p in source.glob(pattern)})
    return [p for p in found if p.name.startswith("meta_") == meta]


def _review_file(source: Path, patterns: list[str]) -> Path:
    """The first file matching the patterns in priority order (e.g. 5-core before full)."""
    for pattern in patterns:
        found = _find(source, [pattern], meta=False)
        if found:
            return found[0]
    raise InvalidInput(f"{source}: no review file matching {patterns}")


def _amazon_2023_csv(source: Path) -> list[Path]:
    """The non-meta ``*.csv`` files in ``source`` whose header is an Amazon 2023 review one."""
    found = []
    for path in _find(source, ["*.csv", "*.csv.gz"], meta=False):
        try:
            with _open_text(path) as handle:
                header = {c.strip() for c in next(csv.reader(handle), [])}
        except (csv.Error, UnicodeDecodeError, OSError):
            continue  # not a readable CSV: not a review file (a bad gzip is an OSError)
        item_column = any(c in header for c in AMAZON_2023_CSV_ITEM)
        if item_column and all(c in header for c in AMAZON_2023_CSV_REQUIRED):
            found.append(path)
    return found


def _open_text(path: Path) -> io.TextIOWrapper:
    """A text handle on a CSV (plain or gzip) for the csv module: UTF-8, an Excel BOM skipped,
    line breaks left to the reader (quoted fields may hold them)."""
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _csv_records(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a CSV (plain or gzip) by header name, streamed; blank lines skipped. A row that is
    not valid CSV (an unclosed quote, more or fewer fields than the header) is named by the line
    it starts on, as an editor counts them (header = line 1, quoted line breaks counted)."""
    with _open_text(path) as handle:
        reader = csv.reader(handle, strict=True)
        header: list[str] | None = None
        last_line = 0
        while True:
            start = last_line + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                message = f"{path.name}:{start}: not valid CSV ({exc}; an unclosed quote?)"
                raise InvalidInput(message) from None
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"{path.name}:{start}: not UTF-8 text ({exc})") from None
            last_line = reader.line_num
            if not row:
                continue
            if header is None:
                header = [c.strip() for c in row]
            elif len(row) != len(header):
                message = f"{path.name}:{start}: expected {len(header)} fields, found {len(row)}"
                raise InvalidInput(message)
            else:
                yield dict(zip(header, row, strict=True))


def _python_literal(line: str) -> Any:
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError):
        return None


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file (plain or gzip); blank lines skipped, a bad line named."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw:
        for number, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                record = _python_literal(line)  # the 2014 metadata files are Python dict reprs
                if record is None:
                    message = f"{path.name}:{number}: not valid JSON ({exc.msg})"
                    raise InvalidInput(message) from None
            if isinstance(record, dict):
                yield record
