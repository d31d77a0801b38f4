"""Hyperparameter search for the project's ALS (``reco tune``).

The test split is set aside first; a validation split is carved from the TRAINING part only with
the same protocol (another seed), every trial is scored on it, and only the winner is refitted on
the whole training part and scored once on test. ``implicit`` gets the same search over the
parameters it has (no frequency-aware regularisation), so "its best" is a tuned baseline too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from Modeling.RecoSystem.evaluate import evaluate_models, evaluate_scorer, fit_model, prepare
from Modeling.RecoSystem.report import plot_trials, run_folder, write_table
from Prod.common.als import ALSParams
from Prod.common.evaluation import load_interactions, split

FACTORS = (32, 64, 128, 200)
ITERATIONS = (10, 15, 20)


def sample_params(rng: np.random.Generator, base: ALSParams, plain_l2: bool = False) -> ALSParams:
    """One random point of the search space (log-uniform scales)."""
    frequency = 0.0 if plain_l2 else float(rng.choice([0.0, 0.5, 1.0]))
    # with frequency scaling lambda multiplies n_u**e, so its useful range is lower
    reg_low, reg_high = (-2.0, 2.0) if frequency == 0 else (-3.5, 0.5)
    return replace(
        base,
        factors=int(rng.choice(FACTORS)),
        iterations=int(rng.choice(ITERATIONS)),
        regularization=float(10 ** rng.uniform(reg_low, reg_high)),
        alpha=float(10 ** rng.uniform(-0.5, 1.7)),
        confidence=str(rng.choice(["linear", "log"])),
        epsilon=float(rng.choice([0.5, 1.0, 5.0])),
        frequency_exponent=frequency,
    )


def tune_dataset(
    dataset_dir: str | Path,
    protocol: str = "ms-stratified-item",
    trials: int = 30,
    k: int = 10,
    seed: int = 42,
    base: ALSParams | None = None,
    tune_implicit: bool = True,
    out_dir: str | Path | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Random search; returns the best params, the trials, and test metrics for the winners."""
    base = base or ALSParams()
    metric = f"ndcg@{k}"
    frame = load_interactions(dataset_dir)
    outer = split(frame, protocol, seed=seed)
    inner = split(outer.train, protocol, seed=seed + 1)  # validation from training data only
    validation = prepare(inner.train, inner.test)
    rng = np.random.default_rng(seed)

    candidates: list[tuple[str, ALSParams]] = [("als", base)]
    candidates += [("als", sample_params(rng, base)) for _ in range(max(trials - 1, 0))]
    if tune_implicit:
        plain = [("implicit", replace(base, frequency_exponent=0.0))]
        plain += [
            ("implicit", sample_params(rng, base, plain_l2=True))
            for _ in range(max(trials // 2 - 1, 0))
        ]
        candidates += plain

    rows = []
    for index, (model, params) in enumerate(candidates, 1):
        started = time.perf_counter()
        scores = evaluate_scorer(fit_model(model, validation, params), validation, k)
        row = {
            "model": model,
            **params.to_dict(),
            metric: scores[metric],
            f"recall@{k}": scores[f"recall@{k}"],
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        if progress is not None:
            progress(index, len(candidates), row)
    trials_frame = pd.DataFrame(rows).sort_values(metric, ascending=False, kind="mergesort")

    best = {}
    for model in trials_frame["model"].unique():
        top = trials_frame[trials_frame["model"] == model].iloc[0]
        best[model] = ALSParams.from_dict({f: _native(top[f]) for f in base.to_dict()})

    test_data = prepare(outer.train, outer.test)
    test = evaluate_models(test_data, best["als"], k, models=("als", "popularity"))
    if "implicit" in best:
        test["implicit"] = evaluate_models(test_data, best["implicit"], k, ("implicit",))[
            "implicit"
        ]

    folder = run_folder("tune", dataset_dir, out_dir)
    files = write_table(trials_frame.set_index("model"), folder, "trials")
    files.update(
        {
            f"test_{key}": value
            for key, value in write_table(
                pd.DataFrame.from_dict(test, orient="index"), folder, "test_metrics"
            ).items()
        }
    )
    als_trials = trials_frame[trials_frame["model"] == "als"]
    files["plot"] = str(
        plot_trials(
            als_trials,
            metric,
            folder / "tune_ndcg.png",
            f"{Path(dataset_dir).name}: validation {metric} per trial ({protocol})",
        )
    )
    return {
        "dataset": str(dataset_dir),
        "protocol": protocol,
        "k": k,
        "trials": len(candidates),
        "best_params": best["als"].to_dict(),
        "best_validation": {
            m: float(trials_frame[trials_frame["model"] == m][metric].iloc[0]) for m in best
        },
        "implicit_best_params": best["implicit"].to_dict() if "implicit" in best else None,
        "test": test,
        "files": files,
    }


def _native(value):
    """numpy scalars from a DataFrame row back to plain Python for the dataclass."""
    if isinstance(value, np.generic):
        value = value.item()
    return value
