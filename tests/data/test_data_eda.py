"""EDA plots and summary, and the held-out signal check, on small datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from Modeling.EDA.eda import PLOTS, gini, run_eda
from Modeling.EDA.signal_check import check_signal
from Prod.datasets.canonical import write_dataset
from Prod.datasets.generate import generate_dataset
from Prod.datasets.importers import import_movielens

FIXTURES = Path(__file__).parent / "fixtures"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eda-store")
    generate_dataset(folder, n_users=600, n_items=300, n_interactions=20_000, seed=3)
    return folder


def test_gini_of_equal_and_concentrated_counts():
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)  # (n - 1) / n


def test_eda_writes_plots_and_a_consistent_summary(small_store, tmp_path):
    summary = run_eda(small_store, tmp_path)

    for name in PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC, name
    events = pd.read_csv(small_store / "interactions.csv")
    assert summary["interactions"] == len(events) == 20_000
    assert summary["users"] == 600 and summary["items"] == 300
    assert summary["events"] == events["event"].value_counts().to_dict()
    assert 0.1 < summary["top_10pct_items_share"] < 1
    assert summary["interactions_per_user"]["max"] == events["user_id"].value_counts().max()
    assert json.loads((tmp_path / "summary.json").read_text())["items"] == 300
    markdown = (tmp_path / "summary.md").read_text()
    assert "20,000 interactions" in markdown and "![popularity_long_tail.png]" in markdown


def test_eda_handles_rating_datasets_without_prices(tmp_path):
    dataset = import_movielens(FIXTURES / "ml-latest-small")
    folder = tmp_path / "ml"
    write_dataset(folder, dataset.users, dataset.items, dataset.interactions)
    summary = run_eda(folder, tmp_path / "out")
    assert summary["price_median"] is None and summary["events"] == {"rating": 5}
    assert "no prices" in (tmp_path / "out" / "summary.md").read_text()


def test_signal_check_finds_tastes_on_a_generated_store(small_store):
    result = check_signal(small_store, factors=16)
    assert result["held_out_in_top2_categories"] > 2 * result["chance_in_top2_categories"]
    recall = result["recall@10"]
    assert recall["als_16"] > recall["most_popular"]
    assert recall["item_knn"] > recall["most_popular"]
