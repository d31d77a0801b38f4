"""Read and validate a canonical dataset folder (format: docs/ARCHITECTURE.md).

The folder holds ``users.csv``, ``items.csv``, ``interactions.csv`` and ``ProductsRAG.json``.
A missing file or column is one :class:`IngestError`. Every bad row becomes a :class:`BadRow`
(``file:line: reason``, with line numbers as a person sees them in an editor: header = line 1,
quoted multi-line fields counted), and the good rows come back as typed DataFrames ready for
bulk loading. Checks are vectorised with pandas; per-row Python only runs for rows that are bad.
The row rules of ``users.csv`` and ``items.csv`` are those of :mod:`Prod.common.items`, which
the catalogue API applies too; the interaction and ProductsRAG.json rules are here.

Item and product text (title, brand, category, description; the product text and metadata) is
cleaned by the shared rules of :mod:`Prod.common.item_cleaning`, as the importers clean it: HTML
and entities removed, titles that are only markup rebuilt, brand spellings merged. What changed
is counted in ``CanonicalTables.cleaning`` / ``ProductCatalogue.cleaning``.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from Prod.common.canonical_format import (
    DEFAULT_WEIGHTS,
    EVENTS,
    INTERACTIONS_FILE,
    ITEMS_FILE,
    MAX_ID_LENGTH,
    RAG_FILE,
    USERS_FILE,
)
from Prod.common.errors import IngestError
from Prod.common.item_cleaning import clean_catalogue, clean_products
from Prod.common.items import (
    FALLBACK_TITLE,
    ITEM_COLUMN_GROUPS,
    USER_COLUMN_GROUPS,
    BadRow,
    ColumnGroups,
    Product,
    RowFlags,
    check_items,
    check_numbers,
    check_users,
    drop_nul_rows,
    short_repr,
)
from Prod.common.timestamps import parse_timestamps_us

TABLE_FILES = (USERS_FILE, ITEMS_FILE, INTERACTIONS_FILE)


INTERACTION_COLUMN_GROUPS = ColumnGroups(
    ("user_id", "item_id", "event", "timestamp"), ("rating", "weight")
)
METADATA_TYPES = (str, int, float, bool)

# ids of users/items that already exist in the database, among the given candidates
KnownIds = Callable[[str, list[str]], set[str]]


@dataclass
class CanonicalTables:
    """The good rows of the three CSV files, typed for loading.

    - ``users``: user_id, name (None = unknown)
    - ``items``: item_id, title, brand, category, price, avg_rating, rating_count (int64),
      description, image_url
    - ``interactions``: user_id, item_id, event (categoricals), rating (float, NaN unless
      event=rating), weight (float > 0), occurred_us (int64 unix microseconds, UTC), line (int64)
    """

    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    bad_rows: list[BadRow] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)
    duplicate_interactions: int = 0
    cleaning: dict[str, int] = field(default_factory=dict)  # CleaningReport.as_dict() of items
    # optional columns the file leaves out, by file (read as empty; stored values are kept)
    absent_columns: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ProductCatalogue:
    products: list[Product]
    bad_rows: list[BadRow] = field(default_factory=list)
    cleaning: dict[str, int] = field(default_factory=dict)  # CleaningReport.as_dict()
    # item_ids of bad entries (a sync must not delete them), and bad entries without one
    skipped_ids: set[str] = field(default_factory=set)
    unidentified_bad_rows: int = 0


# --- files and CSV parsing ------------------------------------------------------------------


def require_files(folder: Path, names: Iterable[str]) -> None:
    """One IngestError naming every missing file (and the folder) if any is absent."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"dataset folder {folder} does not exist", folder=str(folder))
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise IngestError(
            f"dataset folder {folder} is missing {', '.join(missing)}",
            folder=str(folder),
            missing_files=missing,
        )


def _physical_lines(data: bytes) -> int:
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _check_header(name: str, header: list[str]) -> list[str]:
    """Stripped column names; a repeated name is an IngestError naming the file and column."""
    columns = [str(c).strip() for c in header]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise IngestError(
            f"{name}:1: column {', '.join(map(repr, repeated))} appears more than once in the "
            "header; nothing was written",
            file=name,
            line=1,
            duplicate_columns=repeated,
        )
    return columns


def _records(name: str, reader) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each record; a CSV syntax error names the record's line."""
    last_line = reader.line_num
    while True:
        start = last_line + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise IngestError(
                f"{name}:{start}: not valid CSV ({exc}; an unclosed quote?)", file=name, line=start
            ) from None
        last_line = reader.line_num
        yield start, record


def _read_csv_slow(name: str, text: str) -> tuple[pd.DataFrame, np.ndarray, list[BadRow]]:
    """Exact line numbers for files with quoted newlines, blank or ragged lines.

    Strict parsing: a quote left open to the end of the file is an error at the line where the
    record starts, not a field swallowing the rest of the file."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records = _records(name, reader)
    _, header = next(records, (1, None))
    if not header:
        raise IngestError(f"{name} is empty (no header line)", file=name)
    columns = _check_header(name, header)
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[BadRow] = []
    for start, record in records:
        if not record:
            continue  # blank line
        if len(record) > len(header):
            bad.append(BadRow(name, start, f"expected {len(header)} fields, found {len(record)}"))
            continue
        record += [""] * (len(header) - len(record))  # as pandas does: missing trailing = empty
        rows.append(record)
        lines.append(start)
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    return frame, np.asarray(lines, dtype=np.int64), bad


def read_csv_lines(path: Path) -> tuple[pd.DataFrame, np.ndarray, list[BadRow]]:
    """(all-string frame, line number of each row, rows that could not be parsed).

    Fast path: the pandas C parser, when every record is exactly one physical line. Otherwise
    (quoted newlines, blank lines, rows with too many fields) the csv module, which knows where
    each record starts. Rows with fewer fields than the header read the missing ones as empty.
    """
    name = path.name
    data = path.read_bytes()
    frame, lines, bad = _parse_csv(name, data)
    if b"\x00" in data:  # memchr: free when absent
        frame, lines, bad = drop_nul_rows(name, frame, lines, bad)
    return frame, lines, bad


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{name} is not UTF-8 text: {exc}", file=name) from None


def _parse_csv(name: str, data: bytes) -> tuple[pd.DataFrame, np.ndarray, list[BadRow]]:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = pd.read_csv(
                io.BytesIO(data),
                dtype=object,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8-sig",
                on_bad_lines="warn",
                skip_blank_lines=True,
            )
    except pd.errors.EmptyDataError:
        raise IngestError(f"{name} is empty (no header line)", file=name) from None
    except UnicodeDecodeError as exc:
        raise IngestError(f"{name} is not UTF-8 text: {exc}", file=name) from None
    except pd.errors.ParserError:
        # pandas counts data rows from 0; the csv module finds the file line (or parses it)
        return _read_csv_slow(name, _decode(name, data))
    # pandas renames a repeated column ("user_id.1"): check the header as written
    first_line = data.partition(b"\n")[0].decode("utf-8-sig", errors="replace")
    _check_header(name, next(csv.reader([first_line]), []))
    parser_warned = any(issubclass(w.category, pd.errors.ParserWarning) for w in caught)
    if parser_warned or _physical_lines(data) != len(frame) + 1:
        return _read_csv_slow(name, _decode(name, data))
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame, np.arange(2, len(frame) + 2, dtype=np.int64), []


def _select_columns(
    frame: pd.DataFrame, name: str, columns: ColumnGroups
) -> tuple[pd.DataFrame, list[str]]:
    """(the required and optional columns, the optional ones absent from the file, read as
    empty: the loader keeps stored values of an absent column)."""
    required, optional = columns.required, columns.optional
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise IngestError(
            f"{name} is missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (found: {', '.join(map(str, frame.columns)) or 'none'})",
            file=name,
            missing_columns=missing,
        )
    absent = [column for column in optional if column not in frame.columns]
    for column in absent:
        frame[column] = ""
    return frame[list(required + optional)], absent


# --- row checks of interactions.csv (users.csv, items.csv: Prod.common.items) ---------------


def _timestamps_us(flags: RowFlags, values: pd.Series) -> np.ndarray:
    """Unix microseconds (UTC) by the shared rule (:data:`Prod.common.timestamps.RULE`)."""
    micros, problems = parse_timestamps_us(values.to_numpy(dtype=object))
    bad = np.zeros(len(micros), dtype=bool)
    bad[list(problems)] = True
    flags.flag(bad, problems.__getitem__)
    return micros


def _events(flags: RowFlags, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes per row, distinct event names): names lower-cased and stripped when that makes
    them valid; rows with unknown events are flagged."""
    codes, uniques = pd.factorize(values.to_numpy(dtype=object))
    normalised = pd.Series(uniques, dtype=object).str.strip().str.lower()
    unknown = ~normalised.isin(EVENTS).to_numpy()
    raw = values.to_numpy(dtype=object)
    flags.flag(
        unknown[codes], lambda p: f"event {short_repr(raw[p])} is not one of {', '.join(EVENTS)}"
    )
    # " View" and "view" are one event: re-code the (few) normalised names
    renumber, names = pd.factorize(normalised.to_numpy(dtype=object))
    return renumber[codes], np.asarray(names, dtype=object)


def _first_occurrences(
    user_codes: np.ndarray, item_codes: np.ndarray, event_codes: np.ndarray, at: np.ndarray
) -> np.ndarray:
    """Bool mask: True for the first row (file order) of each (user, item, event, time) key."""
    # fold the key into one int64 so pandas hashes one integer column, not four
    n_items = int(item_codes.max()) + 1 if len(item_codes) else 1
    # codes index every distinct spelling seen, unknown events included: use the real range
    n_events = int(event_codes.max()) + 1 if len(event_codes) else 1
    who_what = (user_codes.astype(np.int64) * n_items + item_codes) * n_events + event_codes
    at_codes, distinct_at = pd.factorize(at)
    n_who_what = int(who_what.max()) + 1 if len(who_what) else 1
    if n_who_what * max(len(distinct_at), 1) < 2**63:
        key = pd.Series(who_what * len(distinct_at) + at_codes)
        return ~key.duplicated(keep="first").to_numpy()
    pairs = pd.DataFrame({"who_what": who_what, "at": at})  # too many distinct keys for int64
    return ~pairs.duplicated(keep="first").to_numpy()


@dataclass(frozen=True)
class _Reference:
    """What an interaction's user_id/item_id must refer to."""

    column: str  # user_id | item_id
    table: str  # user | item (database table, for ``known_ids``)
    source: str  # users.csv | items.csv
    good_ids: pd.Series
    rejected_ids: frozenset[str]


def _check_reference(
    flags: RowFlags, values: pd.Series, ref: _Reference, known_ids: KnownIds | None
) -> tuple[np.ndarray, np.ndarray]:
    """Flag empty, too long and dangling ids; returns (codes per row, distinct ids).

    Checks run once per distinct id (tens of thousands), not once per row (millions).
    """
    codes, uniques = pd.factorize(values.to_numpy(dtype=object))
    distinct = pd.Series(uniques, dtype=object)
    lengths = distinct.str.len().to_numpy()
    flags.flag((lengths == 0)[codes], lambda _: f"{ref.column} is empty")
    flags.flag(
        (lengths > MAX_ID_LENGTH)[codes],
        lambda _: f"{ref.column} longer than {MAX_ID_LENGTH} chars",
    )
    unknown = (lengths > 0) & ~distinct.isin(ref.good_ids).to_numpy()
    if unknown.any() and known_ids is not None:
        in_db = known_ids(ref.table, uniques[unknown].tolist())
        unknown &= ~distinct.isin(in_db).to_numpy()

    def reason(pos: int) -> str:
        value = uniques[codes[pos]]
        if value in ref.rejected_ids:
            return f"{ref.column} {short_repr(value)} was rejected in {ref.source}"
        return f"unknown {ref.column} {short_repr(value)} (not in {ref.source} nor the database)"

    flags.flag(unknown[codes], reason)
    return codes, np.asarray(uniques, dtype=object)


def _check_interactions(
    frame: pd.DataFrame,
    lines: np.ndarray,
    references: tuple[_Reference, _Reference],
    known_ids: KnownIds | None,
) -> tuple[pd.DataFrame, RowFlags, int]:
    """(good interactions without exact duplicates, flags, number of duplicates dropped)."""
    flags = RowFlags(INTERACTIONS_FILE, lines)
    user_codes, user_ids = _check_reference(flags, frame["user_id"], references[0], known_ids)
    item_codes, item_ids = _check_reference(flags, frame["item_id"], references[1], known_ids)
    event_codes, event_names = _events(flags, frame["event"])
    is_rating = (event_names == "rating")[event_codes]
    rating = check_numbers(flags, frame["rating"], "rating", 1, 5)
    has_rating = ~np.isnan(rating)
    flags.flag(
        is_rating & ~has_rating & (frame["rating"].to_numpy() == ""),
        lambda _: "rating is required when event=rating",
    )
    flags.flag(
        ~is_rating & has_rating,
        lambda p: f"rating is only allowed when event=rating (event={event_names[event_codes[p]]})",
    )
    weight = check_numbers(flags, frame["weight"], "weight", 0, None, low_inclusive=False)
    # an empty weight takes the event's default; a rating weighs its rating
    weight_by_event = np.array([DEFAULT_WEIGHTS.get(name, np.nan) for name in event_names])
    default_weight = np.where(is_rating, rating, weight_by_event[event_codes])
    weight = np.where(np.isnan(weight), default_weight, weight)
    occurred_us = _timestamps_us(flags, frame["timestamp"])

    good = ~flags.bad_mask(len(frame))
    # the database's unique event key, on integer codes (fast) rather than strings
    first = _first_occurrences(
        user_codes[good], item_codes[good], event_codes[good], occurred_us[good]
    )
    keep = np.flatnonzero(good)[first]
    interactions = pd.DataFrame(
        {
            "user_id": pd.Categorical.from_codes(user_codes[keep], categories=user_ids),
            "item_id": pd.Categorical.from_codes(item_codes[keep], categories=item_ids),
            "event": pd.Categorical.from_codes(event_codes[keep], categories=event_names),
            "rating": np.where(is_rating, rating, np.nan)[keep],
            "weight": weight[keep],
            "occurred_us": occurred_us[keep],
            "line": lines[keep],
        }
    )
    return interactions, flags, int(good.sum() - len(keep))


def read_tables(folder: Path, known_ids: KnownIds | None = None) -> CanonicalTables:
    """Read and validate users.csv, items.csv and interactions.csv of ``folder``.

    ``known_ids(table, ids)`` (table "user" or "item") says which ids exist in the database, so
    interactions may refer to users/items loaded earlier. Exact duplicate interactions (same user,
    item, event and time) are kept once and counted in ``duplicate_interactions``.
    """
    folder = Path(folder)
    require_files(folder, TABLE_FILES)
    parsed = {name: read_csv_lines(folder / name) for name in TABLE_FILES}
    specs = {
        USERS_FILE: USER_COLUMN_GROUPS,
        ITEMS_FILE: ITEM_COLUMN_GROUPS,
        INTERACTIONS_FILE: INTERACTION_COLUMN_GROUPS,
    }
    selected = {name: _select_columns(parsed[name][0], name, specs[name]) for name in TABLE_FILES}
    frames = {name: frame for name, (frame, _) in selected.items()}
    bad_rows = [bad for name in TABLE_FILES for bad in parsed[name][2]]
    rows_read = {name: len(frames[name]) + len(parsed[name][2]) for name in TABLE_FILES}

    users, user_flags = check_users(frames[USERS_FILE], parsed[USERS_FILE][1])
    items, item_flags = check_items(frames[ITEMS_FILE], parsed[ITEMS_FILE][1])
    items, cleaning = clean_catalogue(items, fallback_title=FALLBACK_TITLE.format, unknown=None)
    references = (
        _Reference(
            "user_id",
            "user",
            USERS_FILE,
            users["user_id"],
            frozenset(frames[USERS_FILE]["user_id"]) - frozenset(users["user_id"]),
        ),
        _Reference(
            "item_id",
            "item",
            ITEMS_FILE,
            items["item_id"],
            frozenset(frames[ITEMS_FILE]["item_id"]) - frozenset(items["item_id"]),
        ),
    )
    interactions, interaction_flags, duplicates = _check_interactions(
        frames[INTERACTIONS_FILE], parsed[INTERACTIONS_FILE][1], references, known_ids
    )
    for flags in (user_flags, item_flags, interaction_flags):
        bad_rows.extend(flags.bad_rows())
    return CanonicalTables(
        users=users,
        items=items,
        interactions=interactions,
        bad_rows=sorted(bad_rows, key=lambda b: (TABLE_FILES.index(b.file), b.line)),
        rows_read=rows_read,
        duplicate_interactions=duplicates,
        cleaning=cleaning.as_dict(),
        absent_columns={name: absent for name, (_, absent) in selected.items() if absent},
    )


# --- ProductsRAG.json -----------------------------------------------------------------------


def _json_array_with_lines(text: str, name: str) -> list[tuple[int, object]]:
    """Entries of a top-level JSON array, each with the line where it starts."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(
            f"{name}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})", file=name
        ) from None
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text.startswith("[", pos):
        raise IngestError(f"{name} must hold a JSON array of products", file=name)
    pos += 1
    line, counted_to = 1, 0
    entries: list[tuple[int, object]] = []
    while True:
        while text[pos] in " \t\r\n,":
            pos += 1
        if text[pos] == "]":
            return entries
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        value, pos = decoder.raw_decode(text, pos)
        entries.append((line, value))


def _product_problem(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return "entry is not an object"
    item_id, text, metadata = entry.get("item_id"), entry.get("text"), entry.get("metadata", {})
    if not isinstance(item_id, str) or not item_id:
        return "item_id is missing or not a non-empty string"
    if len(item_id) > MAX_ID_LENGTH:
        return f"item_id longer than {MAX_ID_LENGTH} chars"
    if not isinstance(text, str) or not text.strip():
        return f"item_id {short_repr(item_id)}: text is missing or empty"
    if not isinstance(metadata, dict):
        return f"item_id {short_repr(item_id)}: metadata is not an object"
    for key, value in metadata.items():
        if value is None:
            continue  # unknown values are dropped, as Chroma metadata cannot hold null
        if not isinstance(value, METADATA_TYPES):
            return f"item_id {short_repr(item_id)}: metadata {key!r} must be a string or number"
        if isinstance(value, float) and not np.isfinite(value):
            return f"item_id {short_repr(item_id)}: metadata {key!r} is not finite"
    return None


def read_products(folder: Path) -> ProductCatalogue:
    """Read and validate ProductsRAG.json; bad entries are reported with their line."""
    folder = Path(folder)
    require_files(folder, (RAG_FILE,))
    try:
        text = (folder / RAG_FILE).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{RAG_FILE} is not UTF-8 text: {exc}", file=RAG_FILE) from None
    products: list[Product] = []
    bad: list[BadRow] = []
    first_line: dict[str, int] = {}
    skipped_ids: set[str] = set()
    unidentified = 0
    for line, entry in _json_array_with_lines(text, RAG_FILE):
        problem = _product_problem(entry)
        if problem is None and entry["item_id"] in first_line:
            first = first_line[entry["item_id"]]
            problem = f"duplicate item_id {short_repr(entry['item_id'])} (first on line {first})"
        if problem is not None:
            bad.append(BadRow(RAG_FILE, line, problem))
            item_id = entry.get("item_id") if isinstance(entry, dict) else None
            if isinstance(item_id, str) and item_id:
                skipped_ids.add(item_id)
            else:
                unidentified += 1
            continue
        first_line[entry["item_id"]] = line
        metadata = {k: v for k, v in entry.get("metadata", {}).items() if v is not None}
        products.append(Product(entry["item_id"], entry["text"], metadata, line))
    cleaned, cleaning = clean_products(
        ((p.item_id, p.text, p.metadata) for p in products), fallback_title=FALLBACK_TITLE.format
    )
    products = [
        Product(item_id, text, metadata, product.line)
        for (item_id, text, metadata), product in zip(cleaned, products, strict=True)
    ]
    return ProductCatalogue(
        products=products,
        bad_rows=bad,
        cleaning=cleaning.as_dict(),
        skipped_ids=skipped_ids - set(first_line),
        unidentified_bad_rows=unidentified,
    )


def describe_bad_rows(bad_rows: list[BadRow], limit: int = 20) -> str:
    """Human summary: the first ``limit`` bad rows, one per line, then how many more."""
    shown = [f"  {bad}" for bad in bad_rows[:limit]]
    if len(bad_rows) > limit:
        shown.append(f"  ... and {len(bad_rows) - limit} more")
    return "\n".join(shown)
