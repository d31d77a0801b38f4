"""``reco bench cold`` on a tiny two-taste dataset whose newest items only reach the test set."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from Prod.bench.cold import bench_cold, newest_items, parse_shares
from Prod.common.als import ALSParams
from Prod.common.errors import InvalidInput

_TEXTS = {
    "hike": "Trail hiking boots with a waterproof leather upper and a grippy rubber sole.",
    "coffee": "An espresso coffee machine with a milk frother for lattes and cappuccinos.",
}


def _dataset(folder):
    """Two tastes; items 10-11 of each are new: first seen as some users' last interaction."""
    items = {f"{t}{n:02d}": t for t in _TEXTS for n in range(12)}
    rows = []
    for u in range(60):
        taste = "hike" if u < 30 else "coffee"
        for n in range(7):
            rows.append((f"u{u:02d}", f"{taste}{(u + n) % 10:02d}", 1.0, 1000 + u * 10 + n))
        if u % 2 == 0:  # the newest items: only as a last (test) interaction
            rows.append((f"u{u:02d}", f"{taste}{10 + u % 4 // 2:02d}", 1.0, 90_000 + u))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp"])
    frame["event"] = "click"
    frame.to_csv(folder / "interactions.csv", index=False)
    records = [
        {"item_id": i, "text": f"{i}. {_TEXTS[t]}", "metadata": {"title": i}}
        for i, t in items.items()
    ]
    (folder / "ProductsRAG.json").write_text(json.dumps(records), encoding="utf-8")
    return frame


def test_mixing_recovers_new_items_the_model_cannot_rank(tmp_path, embedder):
    frame = _dataset(tmp_path)
    assert newest_items(frame, 4 / 24) == {"hike10", "hike11", "coffee10", "coffee11"}
    params = ALSParams(factors=8, iterations=5, regularization=0.1)
    report = bench_cold(
        tmp_path, embedder=embedder, shares=(0.0, 0.2), cold_share=4 / 24, params=params
    )
    assert report["cold_items"] == 4 and report["users_evaluated"] == 60
    assert report["users_with_cold_test_item"] == 30
    on_cold = report["ndcg@10_users_with_cold_test_item"]
    # no factor, no rank: only the content slots can find the held-back items
    assert on_cold["share 0"] == 0.0 and on_cold["warm (all items have factors)"] == 0.0
    assert on_cold["share 0.2"] > 0.3
    overall = report["ndcg@10"]
    assert overall["share 0.2"] > overall["share 0"]


def test_shares_are_checked():
    assert parse_shares("0,0.1,0.25") == (0.0, 0.1, 0.25)
    for bad in ("0,x", "1.5", ""):
        with pytest.raises(InvalidInput, match="--shares"):
            parse_shares(bad)
