"""Speed and quality of the project's ALS against ``implicit`` on the same data (reco bench als).

Protocol: both get the same training CSR (a per-user random 80/20 split), factors, iterations,
CG steps, regularisation and confidences (``implicit`` is fed ``c_ui`` directly). The project's
ALS runs with ``threads`` row-group threads (one intra-op torch thread each); ``implicit`` with
``num_threads=threads`` and one BLAS thread (``OPENBLAS_NUM_THREADS=1``, as its docs ask). After a
one-iteration warm-up of each, the two are timed alternately ``repeats`` times in one process, so
both see the same machine load; the report gives the medians (and every run), wall and CPU
seconds per iteration, their ratios, the load average, each fit's peak memory growth (the most
over the repeats, Linux only: data, factors and temporaries), and nDCG@10 of both on the holdout
(on a seeded sample of at most ``max_eval_users`` users for large data).

Data: a canonical dataset folder (e.g. ``reco generate --scale 10`` for ~1M events, ``--scale
100`` for ~10M), or, by default, :func:`synthetic_interactions`, a fast in-memory long-tailed
matrix of the requested size.

The split preparation, scoring and the ``implicit`` adapter are Modeling's offline evaluation
harness (:mod:`Modeling.RecoSystem`), reused here rather than written twice.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from Modeling.RecoSystem.evaluate import Prepared, evaluate_scorer, prepare
from Modeling.RecoSystem.models import als_scorer, fit_implicit
from Prod.common.als import ALSParams, Kernel, fit_als, resolve_kernel
from Prod.common.evaluation import load_interactions, user_random_split

BenchProgress = Callable[[str], None]
"""``progress(label)`` called before each timed fit (and the warm-ups)."""


def synthetic_interactions(n_interactions: int, seed: int = 0) -> pd.DataFrame:
    """Long-tailed interactions with taste structure (users ~ n/20, items ~ n/50, >= 1000).

    Users' activity is log-normal, items' popularity Zipf-like; 60% of picks come from the
    user's taste cluster (a cluster-specific reordering of the catalogue), the rest from global
    popularity, so there is something for a recommender to learn.
    """
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n_interactions // 20, 100), max(n_interactions // 50, 1000)
    n_clusters = 50
    activity = rng.lognormal(0.0, 1.0, n_users)
    users = rng.choice(n_users, n_interactions, p=activity / activity.sum())
    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -0.9
    ranks = rng.choice(n_items, n_interactions, p=popularity / popularity.sum())
    cluster_orders = np.argsort(rng.random((n_clusters, n_items)), axis=1)
    from_taste = rng.random(n_interactions) < 0.6
    items = np.where(from_taste, cluster_orders[users % n_clusters, ranks], ranks)
    return pd.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "item_id": items.astype(np.int64),
            "weight": rng.integers(1, 5, n_interactions).astype(np.float32),
            "timestamp": np.zeros(n_interactions, dtype=np.int64),
        }
    )


def bench_data(
    n_interactions: int, seed: int = 0, dataset_dir: str | Path | None = None
) -> tuple[Prepared, str]:
    """The 80/20 per-user split both implementations train and are scored on, and its source."""
    if dataset_dir is not None:
        frame, source = load_interactions(dataset_dir), str(Path(dataset_dir).resolve())
    else:
        frame, source = synthetic_interactions(n_interactions, seed), "synthetic"
    parts = user_random_split(frame, 0.2, seed)
    return prepare(parts.train, parts.test), source


def sample_eval_users(data: Prepared, max_users: int, seed: int = 0) -> Prepared:
    """The same split scored on at most ``max_users`` evaluated users (a seeded sample).

    Scoring ranks every item for every user (users x items x k flops: 10^12 and more at 10M
    interactions); a sample of tens of thousands of users measures nDCG@10 to ~0.001.
    """
    n = int(data.users.numel())
    if n <= max_users:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(n, max_users, replace=False))
    return replace(
        data, users=data.users[torch.from_numpy(keep)], relevant=[data.relevant[i] for i in keep]
    )


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024


def _with_peak(fn: Callable[[], object]) -> tuple[object, float | None]:
    """``(fn(), peak memory growth in MB while it ran)``: freed memory is handed back to the
    system first (glibc ``malloc_trim``, else an earlier fit's freed pages would be reused
    unseen) and the high-water mark reset to the current RSS (Linux ``clear_refs``); the growth
    is None where that is not possible."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_mb("VmRSS")
    except (OSError, AttributeError, IndexError, ValueError):
        return fn(), None
    result = fn()
    return result, round(_status_mb("VmHWM") - base, 1)


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def bench_als(
    n_interactions: int = 1_000_000,
    factors: int = 64,
    iterations: int = 5,
    threads: int = 2,
    repeats: int = 3,
    seed: int = 0,
    params: ALSParams | None = None,
    device: str | None = None,
    dataset_dir: str | Path | None = None,
    progress: BenchProgress | None = None,
    max_eval_users: int = 50_000,
    kernel: Kernel = "auto",
    compare_batched: bool = True,
) -> dict:
    """Seconds per iteration for both implementations (medians), their ratio and both nDCG@10.

    ``kernel`` is the project's ALS kernel timed as ``torch`` (see :data:`Kernel`); when it
    resolves to ``fused`` and ``compare_batched``, the batched kernel is timed in the same
    rounds too (``batched_*``), so one run compares all three.
    """
    report = progress or (lambda label: None)
    torch.set_num_threads(threads)  # for the data preparation; fit_als manages its own threads
    params = replace(params or ALSParams(), factors=factors, iterations=iterations)
    data, source = bench_data(n_interactions, seed, dataset_dir)
    chosen = resolve_kernel(kernel, torch.device(device or "cpu"))

    def fit_with(name: str) -> Callable[[ALSParams], object]:
        if name == "implicit":
            return lambda p: fit_implicit(data.train, p, num_threads=threads)[0]
        own = chosen if name == "torch" else "batched"
        return lambda p: fit_als(
            data.train, p, device=device, compute_loss=False, num_threads=threads, kernel=own
        )

    names = ["torch", "implicit"]
    if chosen == "fused" and compare_batched:
        names.insert(1, "batched")
    fits = {name: fit_with(name) for name in names}
    warm = replace(params, iterations=1)
    report("warm-up")
    for fit in fits.values():
        fit(warm)
    load_before = _load_average()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    models: dict[str, object] = {}
    peaks: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(1, repeats + 1):
        for name in names:
            report(f"{name} {repeat}/{repeats}")
            # the memory reset before the clock starts: trimming an earlier fit's memory takes ms
            (wall, cpu, models[name]), peak = _with_peak(
                lambda f=fits[name]: _timed(lambda: f(params))
            )
            runs[name].append((wall / iterations, cpu / iterations))
            if peak is not None:
                peaks[name].append(peak)
    load_after = _load_average()

    k = 10
    report("nDCG@10")
    scored = sample_eval_users(data, max_eval_users, seed)
    ndcg = {
        name: evaluate_scorer(
            models[name] if name == "implicit" else als_scorer(models[name]), scored, k
        )[f"ndcg@{k}"]
        for name in names
    }
    wall = {name: _median([w for w, _ in runs[name]]) for name in names}
    cpu = {name: _median([c for _, c in runs[name]]) for name in names}
    result = {
        "data": source,
        "interactions": int(data.train._nnz()),
        "users": data.maps.n_users,
        "items": data.maps.n_items,
        "factors": factors,
        "iterations": iterations,
        "cg_steps": params.cg_steps,
        "threads": threads,
        "repeats": repeats,
        "device": str(models["torch"].user_factors.device),
        "kernel": chosen,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "ndcg_users": int(scored.users.numel()),
    }
    for name in names:
        result[f"{name}_s_per_iter"] = wall[name]
        result[f"{name}_cpu_s_per_iter"] = cpu[name]
        result[f"{name}_runs_s_per_iter"] = [round(w, 4) for w, _ in runs[name]]
        result[f"{name}_ndcg@10"] = ndcg[name]
        result[f"{name}_peak_mb"] = max(peaks[name]) if peaks[name] else None
    for name, prefix in (("torch", ""), ("batched", "batched_")):
        if name in names:
            result[f"{prefix}ratio"] = round(wall[name] / wall["implicit"], 3)
            result[f"{prefix}cpu_ratio"] = round(cpu[name] / cpu["implicit"], 3)
            result[f"{prefix}ndcg_ratio"] = (
                round(ndcg[name] / ndcg["implicit"], 4) if ndcg["implicit"] else None
            )
    return result
