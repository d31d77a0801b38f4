"""Offline evaluation end to end on a tiny generated dataset: quality floor and the commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from Modeling.RecoSystem.evaluate import evaluate_models, prepare
from Prod.bench.als import synthetic_interactions
from Prod.cli.main import app
from Prod.common.als import ALSParams
from Prod.common.evaluation import user_random_split

SMALL = ALSParams(factors=16, iterations=6, regularization=0.5, alpha=2.0)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    frame = synthetic_interactions(6000, seed=1)
    folder = tmp_path_factory.mktemp("tiny")
    frame = frame.assign(
        user_id="u" + frame["user_id"].astype(str),
        item_id="i" + frame["item_id"].astype(str),
        event="view",
        rating="",
        timestamp=pd.Timestamp("2025-01-01") + pd.to_timedelta(frame.index.to_series(), unit="s"),
    )
    frame[["user_id", "item_id", "event", "rating", "weight", "timestamp"]].to_csv(
        folder / "interactions.csv", index=False
    )
    return folder


def _clustered(rng: np.random.Generator, n_users=200, n_clusters=5, per_cluster=20) -> pd.DataFrame:
    """Each user draws 12 items, 80% from its cluster's items, 20% from the whole catalogue."""
    users, items = [], []
    n_items = n_clusters * per_cluster
    for user in range(n_users):
        own = rng.choice(per_cluster, 12) + per_cluster * (user % n_clusters)
        anywhere = rng.integers(0, n_items, 12)
        users += [user] * 12
        items += np.where(rng.random(12) < 0.8, own, anywhere).tolist()
    return pd.DataFrame({"user_id": users, "item_id": items, "weight": 1.0, "timestamp": 0})


def test_als_beats_popularity_on_structured_data(rng):
    torch.set_num_threads(1)
    parts = user_random_split(_clustered(rng), 0.25, seed=0)
    results = evaluate_models(
        prepare(parts.train, parts.test), SMALL, 10, models=("als", "popularity")
    )
    assert results["als"]["ndcg@10"] > results["popularity"]["ndcg@10"] > 0
    assert results["als"]["coverage@10"] > results["popularity"]["coverage@10"]


def test_reco_evaluate_and_tune_commands(tiny_dataset, tmp_path):
    runner = CliRunner()
    params_path = tmp_path / "als_params.json"
    SMALL.to_file(params_path)
    out = runner.invoke(
        app,
        [
            "evaluate",
            str(tiny_dataset),
            "--protocol",
            "user-random",
            "--params",
            str(params_path),
            "--out",
            str(tmp_path / "res"),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    for model in ("als", "popularity", "implicit"):
        assert set(result[model]) >= {
            "ndcg@10",
            "precision@10",
            "recall@10",
            "map@10",
            "hit@10",
            "coverage@10",
        }
    assert Path(result["meta"]["files"]["plot"]).stat().st_size > 0

    tuned = tmp_path / "tuned.json"
    out = runner.invoke(
        app,
        [
            "tune",
            str(tiny_dataset),
            "--out",
            str(tuned),
            "--trials",
            "2",
            "--protocol",
            "user-random",
            "--no-with-implicit",
            "--results",
            str(tmp_path / "res"),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.strip().splitlines()[-1])
    assert ALSParams.from_file(tuned).to_dict() == summary["best_params"]
    assert json.loads(tuned.read_text())["protocol"] == "user-random"
    assert summary["test"]["als"]["ndcg@10"] > 0
