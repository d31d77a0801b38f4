"""Spark MLlib ALS against the torch ALS on the same split (``reco bench spark``).

Both fit the same training pairs (a per-user random 80/20 split, :func:`Prod.bench.als.bench_data`)
with the same params file mapped onto Spark (:mod:`Prod.als_trainer.spark_backend`), and are
scored by Modeling's harness (nDCG@10, seen items removed). Reported per Spark master: session
start, ratings input (driver -> executors, cached), fit wall time; torch: fit wall time.

``--standalone N`` also runs a real standalone cluster on this machine: a master and N workers as
separate JVM processes started with the ``spark-class`` launcher that ships with PySpark (the pip
package has no ``sbin/start-master.sh``; ``spark-class`` is what that script runs), stopped after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from Modeling.RecoSystem.evaluate import Prepared, evaluate_scorer
from Prod.bench.als import _load_average, bench_data, sample_eval_users
from Prod.common.als import ALSParams, fit_als
from Prod.orchestrate.local_infra import free_port

BenchProgress = Callable[[str], None]


def factor_scorer(user_factors: np.ndarray | torch.Tensor, item_factors: np.ndarray | torch.Tensor):
    users, items = torch.as_tensor(user_factors), torch.as_tensor(item_factors)
    return lambda batch: users[batch] @ items.T


def train_arrays(data: Prepared) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coo = data.train.to_sparse_coo().coalesce()
    rows, cols = coo.indices().numpy()
    return rows, cols, coo.values().numpy()


def spark_fit(data: Prepared, params: ALSParams, master: str, partitions: int = 0) -> dict:
    """Start a session on ``master``, fit, stop it: timings and the factors' scorer."""
    from Prod.als_trainer import spark_backend

    spark_backend.spark_session.cache_clear()
    start = time.perf_counter()
    spark = spark_backend.spark_session(master, os.environ.get("SPARK_DRIVER_MEMORY", "2g"))
    started = time.perf_counter()
    try:
        rows, cols, weights = train_arrays(data)
        frame = spark_backend.ratings_frame(spark, rows, cols, weights, params, partitions)
        loaded = time.perf_counter()
        users, items = spark_backend.fit_frame(
            frame, data.maps.n_users, data.maps.n_items, params, partitions
        )
        fitted = time.perf_counter()
        cores = spark.sparkContext.defaultParallelism
    finally:
        spark.stop()
        spark_backend.spark_session.cache_clear()
    return {
        "master": master,
        "default_parallelism": cores,
        "session_start_s": round(started - start, 2),
        "input_s": round(loaded - started, 2),
        "fit_s": round(fitted - loaded, 2),
        "scorer": factor_scorer(users, items),
    }


@contextmanager
def standalone_cluster(workers: int, cores: int = 1, memory: str = "1g") -> Iterator[str]:
    """A Spark master and ``workers`` workers on 127.0.0.1 as separate processes; yields its URL."""
    from pyspark.find_spark_home import _find_spark_home

    launcher = str(Path(_find_spark_home()) / "bin" / "spark-class")
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    logs = Path(tempfile.mkdtemp(prefix="reco-spark-cluster-"))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(logs)}
    procs = []

    def spawn(name: str, *args: str) -> None:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process below
        procs.append((subprocess.Popen([launcher, *args], stdout=log, stderr=log, env=env), log))

    try:
        spawn(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(free_port()),
        )
        for i in range(workers):
            spawn(
                f"worker{i}",
                "org.apache.spark.deploy.worker.Worker",
                url,
                "--host",
                "127.0.0.1",
                "--cores",
                str(cores),
                "--memory",
                memory,
                "--webui-port",
                str(free_port()),
            )
        _wait_for_workers(logs, workers, timeout_s=60)
        yield url
    finally:
        for proc, log in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        shutil.rmtree(logs, ignore_errors=True)


def _wait_for_workers(logs: Path, workers: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = (logs / "master.log").read_text(errors="replace")
        if text.count("Registering worker") >= workers:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Spark workers did not register within {timeout_s:.0f} s")


def trainer_runs(dataset_dir: str | Path, params: ALSParams, master: str, partitions: int) -> dict:
    """One whole training run per backend (``run_training``: load, holdout, fit, publish,
    switch) on temporary Postgres/Redis/Chroma holding ``dataset_dir``; wall time and stages."""
    from config import Settings
    from Prod.als_trainer import spark_backend
    from Prod.als_trainer.service import run_training
    from Prod.datasets.ingest.postgres import ingest_postgres
    from Prod.orchestrate.local_infra import LocalInfra

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="reco-bench-spark-") as folder:
        infra = LocalInfra(Path(folder), free_port(), free_port(), free_port())
        infra.up(timeout_s=180)
        spark_backend.spark_session.cache_clear()
        try:
            settings = Settings(
                environment="test",
                **infra.settings_overrides(),
                als_params_path=params.to_file(Path(folder) / "als_params.json"),
                api_key=None,
                reranker_model="",
                spark_master=master,
                spark_partitions=partitions,
            )
            ingest_postgres(settings.database_url, Path(dataset_dir))
            start = time.perf_counter()
            spark_backend.session_for(settings)  # started once per trainer process
            out["spark_session_start_s"] = round(time.perf_counter() - start, 2)
            for backend in ("torch", "spark"):
                start = time.perf_counter()
                result = run_training(
                    settings.model_copy(update={"als_backend": backend}), force=True
                )
                out[backend] = {
                    "status": result.status,
                    "error": result.error,
                    "wall_s": round(time.perf_counter() - start, 2),
                    "holdout_ndcg@10": result.metrics.get("ndcg@10"),
                    "stages_s": result.durations,
                }
        finally:
            if spark_backend.spark_session.cache_info().currsize:
                spark_backend.session_for(settings).stop()
                spark_backend.spark_session.cache_clear()
            infra.down()
    return out


def bench_spark(
    dataset_dir: str | Path | None = None,
    n_interactions: int = 100_000,
    params: ALSParams | None = None,
    masters: tuple[str, ...] = ("local[*]",),
    standalone_workers: int = 0,
    partitions: int = 0,
    seed: int = 0,
    max_eval_users: int = 50_000,
    progress: BenchProgress | None = None,
    trainer: bool = False,
) -> dict:
    """Torch vs Spark ALS fit time and nDCG@10 on one split (module docstring); ``trainer``:
    also one whole training run per backend (:func:`trainer_runs`, needs ``dataset_dir``)."""
    from Prod.als_trainer.spark_backend import check_params

    report = progress or (lambda label: None)
    params = params or ALSParams(frequency_exponent=1.0)
    check_params(params)
    data, source = bench_data(n_interactions, seed, dataset_dir)
    scored = sample_eval_users(data, max_eval_users, seed)
    k = 10
    load_before = _load_average()
    report("torch fit")
    start = time.perf_counter()
    model = fit_als(data.train, params, compute_loss=False)
    torch_s = time.perf_counter() - start
    torch_ndcg = evaluate_scorer(factor_scorer(model.user_factors, model.item_factors), scored, k)
    runs = []
    for master in masters:
        report(f"spark {master}")
        runs.append(spark_fit(data, params, master, partitions))
    if standalone_workers:
        report(f"standalone cluster: master + {standalone_workers} workers")
        with standalone_cluster(standalone_workers) as url:
            runs.append(spark_fit(data, params, url, partitions or 2 * standalone_workers))
        runs[-1]["master"] = f"standalone ({standalone_workers} workers x 1 core)"
    for run in runs:
        ndcg = evaluate_scorer(run.pop("scorer"), scored, k)[f"ndcg@{k}"]
        run["ndcg@10"] = ndcg
        run["ndcg_ratio"] = round(ndcg / torch_ndcg[f"ndcg@{k}"], 4)
        run["fit_ratio"] = round(run["fit_s"] / torch_s, 2)
    whole = None
    if trainer:
        report("whole training runs")
        whole = trainer_runs(dataset_dir, params, (*masters, "local[*]")[0], partitions)
    return {
        "data": source,
        "interactions": int(data.train._nnz()),
        "users": data.maps.n_users,
        "items": data.maps.n_items,
        "params": params.to_dict(),
        "torch_fit_s": round(torch_s, 2),
        "torch_threads": torch.get_num_threads(),
        "torch_ndcg@10": torch_ndcg[f"ndcg@{k}"],
        "ndcg_users": int(scored.users.numel()),
        "spark": runs,
        "trainer_runs": whole,
        "load_average_before": load_before,
        "load_average_after": _load_average(),
    }
