"""Splits: per-user random, leave-last-out, MS stratified by item; ranking excludes seen items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from Prod.common.errors import InvalidInput
from Prod.common.evaluation import (
    IndexMaps,
    collapse_pairs,
    load_interactions,
    split,
    stratified_split,
    to_user_items,
    top_k_excluding_seen,
    user_last_split,
    user_random_split,
)


def _frame(rng: np.random.Generator, n_users=30, n_items=40, n=600) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, n_users, n)],
            "item_id": [f"i{i}" for i in rng.integers(0, n_items, n)],
            "weight": rng.integers(1, 5, n).astype(np.float32),
            "timestamp": rng.integers(0, 10_000, n),
        }
    )


def _pairs(frame: pd.DataFrame) -> set:
    return set(zip(frame["user_id"], frame["item_id"], strict=True))


def test_collapse_sums_weights_and_keeps_latest_time():
    frame = pd.DataFrame(
        {
            "user_id": ["u", "u", "v"],
            "item_id": ["a", "a", "a"],
            "weight": [1.0, 2.0, 4.0],
            "timestamp": [5, 9, 1],
        }
    )
    out = collapse_pairs(frame).set_index("user_id")
    assert out.loc["u", "weight"] == 3.0 and out.loc["u", "timestamp"] == 9
    assert len(out) == 2


@pytest.mark.parametrize("protocol", ["user-random", "user-last", "ms-stratified-item"])
def test_splits_partition_the_pairs(rng, protocol):
    frame = _frame(rng)
    parts = split(frame, protocol, seed=3)
    assert not (_pairs(parts.train) & _pairs(parts.test))
    assert _pairs(parts.train) | _pairs(parts.test) == _pairs(collapse_pairs(frame))
    again = split(frame, protocol, seed=3)
    assert _pairs(again.test) == _pairs(parts.test)


def test_user_random_keeps_every_user_in_training(rng):
    frame = _frame(rng)
    parts = user_random_split(frame, 0.25, seed=1)
    assert set(parts.train["user_id"]) == set(frame["user_id"])
    counts = collapse_pairs(frame).groupby("user_id").size()
    test_counts = parts.test.groupby("user_id").size()
    for user, n_test in test_counts.items():
        assert n_test == max(1, min(round(counts[user] * 0.25), counts[user] - 1))


def test_user_last_holds_out_each_users_latest_item(rng):
    frame = _frame(rng)
    parts = user_last_split(frame)
    pairs = collapse_pairs(frame)
    for user, group in parts.test.groupby("user_id"):
        assert len(group) == 1
        assert group["timestamp"].iloc[0] == pairs[pairs["user_id"] == user]["timestamp"].max()


def test_stratified_by_item_matches_ms_recommenders_ratio(rng):
    frame = _frame(rng, n=900)
    parts = stratified_split(frame, 0.75, "item_id", seed=42)
    pairs = collapse_pairs(frame)
    per_item = pairs.groupby("item_id").size()
    train_per_item = parts.train.groupby("item_id").size().reindex(per_item.index, fill_value=0)
    # MS: rows with rank / count <= 0.75 train, i.e. floor(0.75 * count) of each item
    assert (train_per_item == np.floor(per_item * 0.75 + 1e-9)).all()


def test_unknown_protocol_is_refused(rng):
    with pytest.raises(InvalidInput):
        split(_frame(rng), "leave-one-out")


def test_top_k_never_returns_seen_items(rng):
    frame = collapse_pairs(_frame(rng, 10, 12, 60))
    maps = IndexMaps.from_frame(frame)
    seen = to_user_items(frame, maps)
    scores = torch.tensor(rng.normal(size=(maps.n_users, maps.n_items)), dtype=torch.float32)
    users = torch.arange(maps.n_users)
    top = top_k_excluding_seen(lambda batch: scores[batch], users, seen, 5, batch_size=3)
    dense_seen = seen.to_dense() > 0
    for u in range(maps.n_users):
        unseen = (~dense_seen[u]).nonzero().squeeze(1)
        expected = unseen[torch.argsort(scores[u, unseen], descending=True)][:5]
        got = top[u][top[u] >= 0]
        assert got.tolist() == expected.tolist()


def test_load_interactions_parses_iso_and_unix_times(tmp_path):
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,event,rating,weight,timestamp\n"
        "u1,p1,view,,1,2025-01-01T00:00:10\nu1,p2,rating,4,4,2025-01-01T00:00:20\n",
        encoding="utf-8",
    )
    frame = load_interactions(tmp_path)
    assert frame["timestamp"].tolist() == [1735689610, 1735689620]
    assert frame["weight"].tolist() == [1.0, 4.0]
    with pytest.raises(InvalidInput):
        load_interactions(tmp_path / "missing")
