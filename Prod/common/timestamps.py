"""The one rule for event timestamps, used by the CSV ingest and by ``POST /interactions``.

A timestamp is either

- ISO 8601 text (``2025-01-01T12:00:00Z``, ``2025-01-01 12:00:00+02:00``; no offset = UTC), or
- whole unix seconds: ASCII digits (``1735689600``) or, in JSON, an integral number.

and must lie in ``[EARLIEST, now + FUTURE_SLACK]``. Nothing is guessed: a number of milliseconds
(``1735689600000``) is out of range and rejected with a hint, never read as milliseconds; fractional
seconds, signs, exponents and non-ASCII digits (``1735689600²``) are rejected. The floor is
1990-01-01 because real public datasets start in the 1990s (MovieLens 1995, Amazon reviews 1996);
anything earlier is an epoch-0 default or a unit mix-up. One day of slack absorbs clock skew.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
RULE = (
    "ISO 8601 (no offset = UTC) or whole unix seconds, "
    f"from {EARLIEST:%Y-%m-%d} to now + {FUTURE_SLACK.days} day"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST_US = int(EARLIEST.timestamp()) * 1_000_000


def _latest_us() -> int:
    return int((datetime.now(UTC) + FUTURE_SLACK).timestamp()) * 1_000_000


def _short(value: object, limit: int = 40) -> str:
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_timestamps_us(values: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Vectorised :data:`RULE` over an object array of strings (surrounding spaces are bad).

    Returns ``(micros, problems)``: ``micros`` (n,) int64 unix microseconds UTC (0 where bad)
    and ``problems`` the reason for each bad value, by position.
    """
    raw = np.asarray(values, dtype=object)
    n = len(raw)
    text = raw
    if not all(isinstance(v, str) for v in raw):
        text = np.array([v if isinstance(v, str) else "" for v in raw], dtype=object)
    out = np.zeros(n, dtype=np.int64)
    # str.isdigit is a C call per value (far cheaper than a regex over millions of rows) but
    # also accepts "²" and other Unicode digits: isascii rules those out
    is_int = np.fromiter(map(str.isdigit, text), dtype=bool, count=n)
    if is_int.any():
        is_int[is_int] = np.fromiter(map(str.isascii, text[is_int]), dtype=bool)
    if is_int.any():
        seconds = pd.to_numeric(pd.Series(text[is_int], dtype=object)).to_numpy(np.float64)
        # out-of-range seconds are flagged below; clip so the multiplication cannot overflow
        out[is_int] = np.clip(seconds, -1, 2**40).astype(np.int64) * 1_000_000
    valid = is_int.copy()
    iso = ~is_int & (text != "")
    if iso.any():
        parsed = pd.to_datetime(
            pd.Series(text[iso], dtype=object), format="ISO8601", utc=True, errors="coerce"
        )
        ok = parsed.notna().to_numpy()
        micros = parsed[ok].dt.tz_localize(None).to_numpy(dtype="datetime64[us]").astype(np.int64)
        iso_positions = np.flatnonzero(iso)
        out[iso_positions[ok]] = micros
        valid[iso_positions[ok]] = True
    latest = _latest_us()
    out_of_range = valid & ((out < _EARLIEST_US) | (out > latest))
    problems: dict[int, str] = {}
    for pos in np.flatnonzero(~valid | out_of_range).tolist():
        shown = _short(raw[pos])
        if not valid[pos]:
            problems[pos] = f"timestamp {shown} is neither ISO-8601 nor whole unix seconds"
        else:
            too_big = is_int[pos] and out[pos] > latest
            hint = " (milliseconds? unix seconds expected)" if too_big else ""
            problems[pos] = (
                f"timestamp {shown} is outside {EARLIEST:%Y-%m-%d} .. now + "
                f"{FUTURE_SLACK.days} day{hint}"
            )
        out[pos] = 0
    return out, problems


def parse_timestamp(value: object) -> datetime:
    """One timestamp by :data:`RULE` (a str, an int, an integral float, or a datetime), as an
    aware UTC datetime; raises ValueError saying what is wrong."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        text = moment.isoformat()
    elif isinstance(value, bool):
        text = None  # JSON true/false is not a time
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, str):
        text = value
    else:
        text = None
    if text is None:
        raise ValueError(f"timestamp {_short(value)} is neither ISO-8601 nor whole unix seconds")
    micros, problems = parse_timestamps_us(np.array([text], dtype=object))
    if problems:
        raise ValueError(problems[0])
    return _EPOCH + timedelta(microseconds=int(micros[0]))
