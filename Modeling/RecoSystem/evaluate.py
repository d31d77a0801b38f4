"""Evaluate recommenders on one split of a canonical dataset (``reco evaluate``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from Modeling.RecoSystem.models import Scorer, fit_implicit, fit_popularity, fit_project_als
from Prod.common.als import ALSParams
from Prod.common.errors import InvalidInput
from Prod.common.evaluation import (
    IndexMaps,
    load_interactions,
    ranking_metrics,
    split,
    to_user_items,
    top_k_excluding_seen,
)

MODELS = ("als", "popularity", "implicit")


@dataclass
class Prepared:
    """A split turned into what the models and metrics need."""

    maps: IndexMaps
    train: torch.Tensor  # CSR (n_users, n_items) training weights
    users: torch.Tensor  # (n_eval,) indices of users evaluated (in train and test)
    relevant: list[set]  # per evaluated user: its test item ids (unknown items included)
    n_train: int
    n_test: int


def prepare(train: pd.DataFrame, test: pd.DataFrame) -> Prepared:
    """Index the training frame; evaluated users are those with training and test rows.

    As in MS Recommenders, test items unseen in training still count as relevant (no model can
    rank them, so they lower recall and nDCG for everyone alike).
    """
    if train.empty or test.empty:
        raise InvalidInput("the split left an empty train or test set; the dataset is too small")
    maps = IndexMaps.from_frame(train)
    user_items = to_user_items(train, maps)
    test = test.assign(u=maps.user_index(test["user_id"]))
    test = test[test["u"] >= 0]
    grouped = test.groupby("u")["item_id"].agg(set)
    users = torch.tensor(grouped.index.to_numpy(np.int64))
    return Prepared(maps, user_items, users, list(grouped.to_numpy()), len(train), len(test))


def score_lists(scorer: Scorer, data: Prepared, k: int) -> list[list[str]]:
    """Top-k item ids per evaluated user, training items excluded."""
    top = top_k_excluding_seen(scorer, data.users, data.train, k).numpy()
    ids = data.maps.item_ids
    return [[ids[i] for i in row if i >= 0] for row in top]


def evaluate_scorer(scorer: Scorer, data: Prepared, k: int) -> dict[str, float]:
    metrics = ranking_metrics(score_lists(scorer, data, k), data.relevant, k, data.maps.n_items)
    return {key: (round(v, 6) if isinstance(v, float) else v) for key, v in metrics.items()}


def fit_model(name: str, data: Prepared, params: ALSParams, device=None) -> Scorer:
    if name == "als":
        return fit_project_als(data.train, params, device=device)
    if name == "popularity":
        return fit_popularity(data.train)
    if name == "implicit":
        return fit_implicit(data.train, params)[0]
    raise InvalidInput(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def evaluate_models(
    data: Prepared,
    params: ALSParams,
    k: int,
    models: tuple[str, ...] = MODELS,
    implicit_params: ALSParams | None = None,
    device=None,
) -> dict[str, dict[str, float]]:
    """``{model: {"ndcg@k": .., ..., "fit_s": ..}}`` on the prepared split."""
    results = {}
    for name in models:
        started = time.perf_counter()
        model_params = implicit_params if (name == "implicit" and implicit_params) else params
        scorer = fit_model(name, data, model_params, device)
        fitted = time.perf_counter()
        metrics = evaluate_scorer(scorer, data, k)
        metrics["fit_s"] = round(fitted - started, 3)
        metrics["eval_s"] = round(time.perf_counter() - fitted, 3)
        results[name] = metrics
    return results


def evaluate_dataset(
    dataset_dir: str | Path,
    protocol: str,
    k: int,
    params: ALSParams,
    models: tuple[str, ...] = MODELS,
    seed: int = 42,
    implicit_params: ALSParams | None = None,
    device=None,
) -> dict:
    """Split the dataset by ``protocol``, fit each model on train and score it on test."""
    frame = load_interactions(dataset_dir)
    parts = split(frame, protocol, seed=seed)
    data = prepare(parts.train, parts.test)
    results = evaluate_models(data, params, k, models, implicit_params, device)
    return {
        "dataset": str(dataset_dir),
        "protocol": protocol,
        "k": k,
        "train_interactions": data.n_train,
        "test_interactions": data.n_test,
        "users_evaluated": len(data.users),
        "items": data.maps.n_items,
        "params": params.to_dict(),
        "models": results,
    }
