"""Writer of the canonical dataset format (names and event weights: Prod.common.canonical_format).

A canonical dataset is a folder with four files (see docs/ARCHITECTURE.md):

- ``users.csv``: ``user_id``, ``name``
- ``items.csv``: ``item_id``, ``title``, ``brand``, ``category``, ``price``, ``avg_rating``,
  ``rating_count``, ``description``, ``image_url``
- ``interactions.csv``: ``user_id``, ``item_id``, ``event``, ``rating``, ``weight``, ``timestamp``
- ``ProductsRAG.json``: ``[{"item_id", "text", "metadata": {...}}]``, what the chat engine embeds

Unknown values are written as empty CSV fields and omitted from the RAG metadata (Chroma metadata
cannot hold null). Timestamps are written as naive ISO-8601 seconds in UTC. Writing is
deterministic: the same frames give byte-identical files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from Prod.common.canonical_format import (
    DATASET_FILES,
    EVENTS,
    INTERACTION_COLUMNS,
    INTERACTIONS_FILE,
    ITEM_COLUMNS,
    ITEMS_FILE,
    RAG_FILE,
    REQUIRED_COLUMNS,
    USER_COLUMNS,
    USERS_FILE,
)
from Prod.common.errors import InvalidInput
from Prod.common.items import field_text, products_rag

_CSV_CHUNK_ROWS = 500_000


def write_dataset(
    folder: str | Path,
    users: pd.DataFrame,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the four canonical files into ``folder`` (created if missing).

    ``interactions.timestamp`` may be datetime64 (naive = UTC, or tz-aware) or integer unix
    seconds; missing optional columns are written empty. Returns counts and file sizes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    users_out = _canonical_users(users)
    items_out = _canonical_items(items)
    interactions_out = _canonical_interactions(interactions)

    _write_csv(users_out, folder / USERS_FILE)
    _write_csv(items_out, folder / ITEMS_FILE)
    _write_csv(
        interactions_out, folder / INTERACTIONS_FILE, _format_interactions, progress=progress
    )
    write_products_rag(folder / RAG_FILE, products_rag(items_out))
    return {
        "folder": str(folder),
        "users": len(users_out),
        "items": len(items_out),
        "interactions": len(interactions_out),
        "bytes": {name: (folder / name).stat().st_size for name in DATASET_FILES},
    }


def write_products_rag(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """A JSON array with one record per line: valid JSON, readable, diff-friendly."""
    lines = [json.dumps(record, ensure_ascii=False, sort_keys=False) for record in records]
    body = "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"
    path.write_text(body, encoding="utf-8")


def format_timestamps(values: pd.Series) -> np.ndarray:
    """ISO-8601 seconds (naive UTC) from datetime64 (naive or tz-aware) or unix seconds."""
    if pd.api.types.is_datetime64_any_dtype(values):
        series = values
        if getattr(series.dt, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        stamps = series.to_numpy().astype("datetime64[s]")
    else:
        stamps = pd.to_numeric(values).to_numpy().astype("int64").astype("datetime64[s]")
    return np.datetime_as_string(stamps, unit="s")


def _canonical_users(users: pd.DataFrame) -> pd.DataFrame:
    frame = _with_columns(users, USER_COLUMNS, USERS_FILE)
    frame["user_id"] = frame["user_id"].astype(str)
    frame["name"] = frame["name"].map(field_text)
    return frame


def _canonical_items(items: pd.DataFrame) -> pd.DataFrame:
    frame = _with_columns(items, ITEM_COLUMNS, ITEMS_FILE)
    frame["item_id"] = frame["item_id"].astype(str)
    for column in ("title", "brand", "category", "description", "image_url"):
        frame[column] = frame[column].map(field_text)
    frame["price"] = _format_decimals(frame["price"], 2)
    frame["avg_rating"] = _format_decimals(frame["avg_rating"], 2)
    counts = pd.to_numeric(frame["rating_count"], errors="coerce").fillna(0)
    frame["rating_count"] = counts.astype("int64")
    return frame


def _canonical_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    frame = _with_columns(interactions, INTERACTION_COLUMNS, INTERACTIONS_FILE)
    unknown = set(pd.unique(frame["event"])) - set(EVENTS)
    if unknown:
        raise InvalidInput(f"unknown event types: {sorted(map(str, unknown))}")
    return frame


def _format_interactions(chunk: pd.DataFrame) -> pd.DataFrame:
    """Text form of one chunk of interactions (done per chunk to bound memory at 10M rows)."""
    chunk = chunk.copy()
    for column in ("user_id", "item_id", "event"):
        chunk[column] = _as_text(chunk[column])
    chunk["rating"] = _format_compact(chunk["rating"])
    chunk["weight"] = _format_compact(chunk["weight"])
    chunk["timestamp"] = format_timestamps(chunk["timestamp"])
    return chunk


def _as_text(values: pd.Series) -> np.ndarray:
    """Strings of a column; categoricals convert their few categories, not every row."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        labels = np.asarray(values.cat.categories.astype(str), dtype=object)
        return labels[values.cat.codes.to_numpy()]
    return values.astype(str).to_numpy(dtype=object)


def _with_columns(frame: pd.DataFrame, columns: list[str], file_name: str) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS[file_name] if c not in frame.columns]
    if missing:
        raise InvalidInput(f"{file_name}: missing required columns {missing}")
    out = pd.DataFrame(index=frame.index)
    for column in columns:
        out[column] = frame[column] if column in frame.columns else None
    return out.reset_index(drop=True)


def _format_decimals(values: pd.Series, decimals: int) -> pd.Series:
    """Fixed decimals with trailing zeros trimmed ("12.5", "12.99", "3"); unknown -> empty."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers.map(lambda v: "" if pd.isna(v) else _trim(f"{v:.{decimals}f}"))


def _format_compact(values: pd.Series) -> np.ndarray:
    """Shortest decimal form of each value ("8", "3.5"); unknown -> empty. Vectorised over the
    few distinct values, so millions of rows cost one ``np.unique``."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    uniques, inverse = np.unique(numbers, return_inverse=True)
    texts = np.array(
        ["" if math.isnan(v) else _trim(repr(float(v))) for v in uniques], dtype=object
    )
    return texts[inverse.reshape(-1)]


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def _write_csv(
    frame: pd.DataFrame,
    path: Path,
    format_chunk: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    progress: bool = False,
) -> None:
    """CSV in chunks (bounded memory, a progress bar for millions of rows)."""
    starts = range(0, max(len(frame), 1), _CSV_CHUNK_ROWS)
    if progress and len(frame) > _CSV_CHUNK_ROWS:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"writing {path.name}", unit="chunk")
    with path.open("w", encoding="utf-8", newline="") as handle:
        for start in starts:
            chunk = frame.iloc[start : start + _CSV_CHUNK_ROWS]
            if format_chunk is not None:
                chunk = format_chunk(chunk)
                if not _needs_quoting(chunk):  # plain join: ~5x faster than to_csv
                    if start == 0:
                        handle.write(",".join(chunk.columns) + "\n")
                    columns = [chunk[c].to_numpy(dtype=object) for c in chunk.columns]
                    if len(chunk):
                        handle.write("\n".join(map(",".join, zip(*columns, strict=True))) + "\n")
                    continue
            chunk.to_csv(handle, index=False, header=start == 0, lineterminator="\n")


def _needs_quoting(chunk: pd.DataFrame) -> bool:
    """Whether an id holds a comma, quote or line break (then CSV quoting is due). The other
    interaction fields are formatted here and never do."""
    return any(
        pd.Series(chunk[c]).str.contains(r'[",\r\n]', regex=True).any()
        for c in ("user_id", "item_id")
    )
