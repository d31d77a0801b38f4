"""Train/test splits of an interactions frame (``user_id``, ``item_id``, ``weight``, ``timestamp``).

Every split first collapses repeated (user, item) events into one row (weights summed, latest
timestamp), so a pair is never both a training and a test interaction. Protocols:

- ``user-random``: per user, a random ``test_ratio`` of its items (users with >= 2 items).
- ``user-last``: per user, its most recent item (leave-last-out by time; users with >= 2 items).
- ``ms-stratified-item``: Microsoft Recommenders' benchmark split, ``python_stratified_split(df,
  ratio=0.75, min_rating=1, filter_by="item")``: per item, rows are ranked in random order and
  those with ``rank / count <= 0.75`` go to training (so an item seen once lands in test).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from Prod.common.errors import InvalidInput

__all__ = [
    "Split",
    "PROTOCOLS",
    "collapse_pairs",
    "split",
    "user_random_split",
    "user_last_split",
    "stratified_split",
]

Protocol = Literal["user-random", "user-last", "ms-stratified-item"]
PROTOCOLS: tuple[str, ...] = ("user-random", "user-last", "ms-stratified-item")


class Split(NamedTuple):
    train: pd.DataFrame
    test: pd.DataFrame


def collapse_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (user_id, item_id): summed ``weight``, latest ``timestamp``."""
    missing = {"user_id", "item_id", "weight"} - set(frame.columns)
    if missing:
        raise InvalidInput(f"interactions lack columns: {', '.join(sorted(missing))}")
    agg = {"weight": "sum"}
    if "timestamp" in frame.columns:
        agg["timestamp"] = "max"
    out = frame.groupby(["user_id", "item_id"], as_index=False, sort=True).agg(agg)
    return out.reset_index(drop=True)


def _random_rank_within(frame: pd.DataFrame, by: str, seed: int) -> tuple[pd.Series, pd.Series]:
    """Per group ``by``: 1-based rank in a seeded random order, and the group size."""
    rng = np.random.default_rng(seed)
    key = pd.Series(rng.random(len(frame)), index=frame.index)
    order = frame.assign(_key=key).sort_values([by, "_key"], kind="mergesort")
    rank = order.groupby(by, sort=False).cumcount() + 1
    count = order.groupby(by, sort=False)[by].transform("size")
    return rank.reindex(frame.index), count.reindex(frame.index)


def user_random_split(frame: pd.DataFrame, test_ratio: float = 0.2, seed: int = 42) -> Split:
    """Per user, ``round(test_ratio * n)`` random items (at least 1, at most n - 1) to test."""
    if not 0 < test_ratio < 1:
        raise InvalidInput("test_ratio must be in (0, 1)")
    pairs = collapse_pairs(frame)
    rank, count = _random_rank_within(pairs, "user_id", seed)
    n_test = np.clip(np.round(count * test_ratio), 1, count - 1)
    is_test = (count >= 2) & (rank <= n_test)
    return Split(pairs[~is_test].reset_index(drop=True), pairs[is_test].reset_index(drop=True))


def user_last_split(frame: pd.DataFrame, n_last: int = 1) -> Split:
    """Per user with more than ``n_last`` items, its ``n_last`` most recent ones to test."""
    pairs = collapse_pairs(frame)
    if "timestamp" not in pairs.columns:
        raise InvalidInput("user-last needs a timestamp column")
    ordered = pairs.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    from_end = ordered.groupby("user_id", sort=False).cumcount(ascending=False)
    count = ordered.groupby("user_id", sort=False)["user_id"].transform("size")
    is_test = ((from_end < n_last) & (count > n_last)).reindex(pairs.index)
    return Split(pairs[~is_test].reset_index(drop=True), pairs[is_test].reset_index(drop=True))


def stratified_split(
    frame: pd.DataFrame, ratio: float = 0.75, by: str = "item_id", seed: int = 42
) -> Split:
    """MS Recommenders' stratified split: per ``by`` group, ``rank / count <= ratio`` trains."""
    if not 0 < ratio < 1:
        raise InvalidInput("ratio must be in (0, 1)")
    pairs = collapse_pairs(frame)
    rank, count = _random_rank_within(pairs, by, seed)
    is_train = rank / count <= ratio
    return Split(pairs[is_train].reset_index(drop=True), pairs[~is_train].reset_index(drop=True))


def split(frame: pd.DataFrame, protocol: str, seed: int = 42) -> Split:
    """The named protocol's split (see the module docstring)."""
    if protocol == "user-random":
        return user_random_split(frame, 0.2, seed)
    if protocol == "user-last":
        return user_last_split(frame)
    if protocol == "ms-stratified-item":
        return stratified_split(frame, 0.75, "item_id", seed)
    raise InvalidInput(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
