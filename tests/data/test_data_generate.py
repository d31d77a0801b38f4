"""The demo-store generator: determinism, exact sizes, a valid canonical dataset, and real signal
(long tail, tastes a collaborative filter can learn)."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from config import ROOT
from Prod.common.canonical_format import DATASET_FILES, EVENT_WEIGHTS
from Prod.common.errors import InvalidInput
from Prod.datasets.generate import GeneratorConfig, generate_dataset, synthesize

SMALL = {"n_users": 1500, "n_items": 600, "n_interactions": 60_000}


@pytest.fixture(scope="module")
def store():
    return synthesize(GeneratorConfig(**SMALL, seed=7))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("store")
    generate_dataset(folder, **SMALL, seed=7)
    return folder


def test_same_seed_gives_byte_identical_files(written, tmp_path):
    generate_dataset(tmp_path, **SMALL, seed=7)
    for name in DATASET_FILES:
        assert filecmp.cmp(written / name, tmp_path / name, shallow=False), name


def test_another_seed_gives_another_store(written, tmp_path):
    generate_dataset(tmp_path, **SMALL, seed=8)
    first, second = (folder / "interactions.csv" for folder in (written, tmp_path))
    assert first.read_bytes() != second.read_bytes()


def test_sizes_are_exact_and_scale_multiplies_defaults(tmp_path):
    summary = generate_dataset(tmp_path, n_users=50, n_items=30, n_interactions=1234, seed=1)
    assert (summary["users"], summary["items"], summary["interactions"]) == (50, 30, 1234)
    assert sum(summary["events"].values()) == 1234
    scaled = GeneratorConfig.scaled(scale=0.01, n_items=77)
    assert (scaled.n_users, scaled.n_items, scaled.n_interactions) == (30, 77, 1000)
    with pytest.raises(InvalidInput):
        GeneratorConfig.scaled(scale=0)


def test_written_files_follow_the_canonical_format(written):
    users = pd.read_csv(written / "users.csv", dtype=str, keep_default_na=False)
    items = pd.read_csv(written / "items.csv", dtype={"item_id": str})
    events = pd.read_csv(written / "interactions.csv", dtype={"user_id": str, "item_id": str})
    rag = json.loads((written / "ProductsRAG.json").read_text())

    assert users["user_id"].is_unique and (users["name"].str.len() > 0).all()
    assert items["item_id"].is_unique and items["title"].notna().all()
    assert (items["price"] > 0).all()
    rated = items["avg_rating"].notna()
    assert items.loc[rated, "avg_rating"].between(1, 5).all()
    assert (items.loc[rated, "rating_count"] > 0).all()
    assert (items.loc[~rated, "rating_count"] == 0).all()
    assert items["category"].nunique() >= 6 and items["brand"].nunique() >= 20
    assert set(events["event"]) == set(EVENT_WEIGHTS)
    assert (events["weight"] == events["event"].map(EVENT_WEIGHTS)).all()
    assert events["rating"].isna().all()
    assert set(events["user_id"]) <= set(users["user_id"])
    assert set(events["item_id"]) <= set(items["item_id"])
    stamps = pd.to_datetime(events["timestamp"])
    assert stamps.is_monotonic_increasing
    assert (stamps.max() - stamps.min()) > pd.Timedelta(days=80)
    assert [r["item_id"] for r in rag] == items["item_id"].tolist()
    assert all(r["text"].startswith(r["metadata"]["title"]) for r in rag)


def test_descriptions_are_readable_sentences(store):
    for row in store.items.head(50).itertuples():
        assert row.description.endswith(".")
        assert row.brand in row.description
        assert "  " not in row.description and "{" not in row.description


def test_prices_follow_product_types_and_brand_tiers(store):
    items = store.items
    books = items.loc[items["category"] == "Books", "price"]
    electronics = items.loc[items["category"] == "Electronics", "price"]
    assert books.median() < electronics.median() / 2
    tastes = store.tastes
    log_price = np.log(items["price"].to_numpy())
    brand_key = tastes.item_category * 100 + tastes.item_brand
    premium_minus_budget = []
    for category in np.unique(tastes.item_category):
        in_category = tastes.item_category == category
        by_brand = pd.Series(log_price[in_category]).groupby(brand_key[in_category]).mean()
        premium_minus_budget.append(by_brand.max() - by_brand.min())
    assert np.mean(premium_minus_budget) > 0.4  # brands differ in price level


def test_funnel_narrows_and_every_purchase_follows_a_view(store):
    counts = store.interactions["event"].value_counts()
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    events = store.interactions
    viewed = set(
        zip(
            events.loc[events["event"] == "view", "user_id"],
            events.loc[events["event"] == "view", "item_id"],
            strict=True,
        )
    )
    purchases = events[events["event"] == "purchase"]
    assert all(
        pair in viewed for pair in zip(purchases["user_id"], purchases["item_id"], strict=True)
    )


def test_popularity_and_activity_are_long_tailed(store):
    events = store.interactions
    per_item = events["item_id"].value_counts().to_numpy()
    top_decile_share = per_item[: len(per_item) // 10].sum() / per_item.sum()
    assert top_decile_share > 0.3  # a uniform catalogue would give 0.1
    per_user = events["user_id"].value_counts()
    assert per_user.max() > 8 * per_user.median()
    assert len(per_user) == SMALL["n_users"]  # every user shows up


def _time_split(store):
    events = store.interactions
    users = events["user_id"].cat.codes.to_numpy()
    items = events["item_id"].cat.codes.to_numpy()
    stamps = events["timestamp"].to_numpy().astype("int64")
    train = stamps < np.quantile(stamps, 0.8)
    return users, items, np.log1p(events["weight"].to_numpy()), train


def test_held_out_items_concentrate_in_each_users_preferred_categories(store):
    users, items, _, train = _time_split(store)
    category = store.tastes.item_category
    n_categories = len(store.tastes.category_names)
    train_counts = np.zeros((len(store.users), n_categories))
    np.add.at(train_counts, (users[train], category[items[train]]), 1)
    top_two = np.argsort(-train_counts, axis=1)[:, :2]
    share = np.bincount(category[items], minlength=n_categories) / len(items)

    test_users, test_categories = users[~train], category[items[~train]]
    known = train_counts[test_users].sum(axis=1) > 0
    in_top_two = (top_two[test_users] == test_categories[:, None]).any(axis=1)[known]
    chance = share[top_two[test_users]].sum(axis=1)[known]
    assert in_top_two.mean() > 2 * chance.mean()


def test_latent_tastes_drive_behaviour(store):
    """Users with a higher price level buy pricier items; favourite brands get extra visits."""
    events = store.interactions
    tastes = store.tastes
    users = events["user_id"].cat.codes.to_numpy()
    items = events["item_id"].cat.codes.to_numpy()
    log_price = np.log(store.items["price"].to_numpy())
    relative = log_price - pd.Series(log_price).groupby(tastes.item_category).transform("mean")
    mean_relative = pd.Series(relative.to_numpy()[items]).groupby(users).mean()
    level = tastes.price_level[mean_relative.index]
    assert np.corrcoef(level, mean_relative.to_numpy())[0, 1] > 0.3

    category = tastes.item_category[items]
    own = (tastes.favourite_brand[users, category] == tastes.item_brand[items]).mean()
    neighbour = (users + 1) % len(store.users)  # someone else's favourite, same category
    others = (tastes.favourite_brand[neighbour, category] == tastes.item_brand[items]).mean()
    assert own > 1.5 * others, (own, others)


def _recall_at_10(scores: np.ndarray, seen: sp.csr_matrix, held_out: dict[int, set]) -> float:
    recalls = []
    for user, relevant in held_out.items():
        row = scores[user].astype(float).copy()
        row[seen[user].indices] = -np.inf
        fresh = relevant - set(seen[user].indices)
        if fresh:
            top = np.argpartition(-row, 10)[:10]
            recalls.append(len(fresh & set(top)) / min(10, len(fresh)))
    return float(np.mean(recalls))


def test_a_collaborative_filter_beats_popularity_on_held_out_events(store):
    """Item-item cosine kNN (a simple stand-in for ALS) must clearly beat most-popular."""
    users, items, weights, train = _time_split(store)
    shape = (len(store.users), len(store.items))
    seen = sp.csr_matrix((weights[train], (users[train], items[train])), shape=shape)
    held_out: dict[int, set] = {}
    for user, item in zip(users[~train], items[~train], strict=True):
        held_out.setdefault(int(user), set()).add(int(item))

    binary = seen.copy()
    binary.data[:] = 1.0
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel()) + 1e-9
    similarity = (binary.T @ binary).toarray() / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    knn_scores = np.asarray(seen @ similarity)
    popularity = np.tile(np.asarray(binary.sum(axis=0)).ravel(), (shape[0], 1))

    knn, popular = (
        _recall_at_10(knn_scores, seen, held_out),
        _recall_at_10(popularity, seen, held_out),
    )
    assert knn > 1.4 * popular, (knn, popular)


def test_committed_default_dataset_matches_the_generator(tmp_path):
    """Prod/data_ingest must be exactly what `reco generate` makes with the defaults."""
    committed = ROOT / "Prod" / "data_ingest"
    generate_dataset(tmp_path)
    for name in DATASET_FILES:
        assert filecmp.cmp(committed / name, tmp_path / name, shallow=False), name
    total = sum((committed / name).stat().st_size for name in DATASET_FILES)
    assert total < 8_000_000
