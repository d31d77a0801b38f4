"""The trainer on Spark MLlib ALS (``ALS_BACKEND=spark``): read, fit and publish on the executors.

Same run as the torch backend (:mod:`Prod.als_trainer.service`), same stages and same published
contract (:mod:`Prod.common.model_store`); what moves to the cluster:

- **load**: one task per user-id range (bounds = quantiles of the ``user`` table) COPYs its
  users' interactions from Postgres (the ``ix_interaction_user_id_occurred_at`` index serves the
  range) and resolves them into positive pairs with the trainer's own parser and negative-feedback
  rule (:func:`Prod.als_trainer.dataset.index_interactions`): a user's events all sit in one task,
  so the per-pair rule needs no shuffle. No JDBC driver, no shared staging folder: executors
  need the project's Python environment, as they do to write Redis.
- **index**: user ids are the range's local index plus the sizes of the ranges before it; item
  ids index the catalogue (broadcast).
- **evaluate / train**: ``pyspark.ml.recommendation.ALS(implicitPrefs=True)`` with the params
  mapped by :func:`spark_als`. Spark cannot warm start, so with the holdout evaluation a run fits
  twice (the torch backend finishes the holdout fit with ``TRAIN_REFIT_ITERATIONS`` sweeps).
- **publish_users**: every executor writes its partition of user factors to the version's Redis
  hash (``foreachPartition`` + :func:`Prod.als_trainer.publisher.write_user_factors`), counted
  back through an accumulator and checked with HLEN. Item factors (one row per catalogue item
  with interactions: 198k x 64 float32 = 51 MB at 10M events) are collected to the driver and go
  to the Redis items hash, and to Chroma after the switch, through the same publisher functions
  as the torch backend.

Param mapping (README, "Training backends"): factors -> rank, iterations -> maxIter,
regularization -> regParam, alpha -> alpha, seed -> seed. Spark always scales regParam by the
user's (item's) number of positive pairs (ALS-WR), which is our ``frequency_exponent = 1``; any
other exponent is refused (:func:`check_params`). Log confidence maps exactly: the rating handed
to Spark is ``log(1 + w / epsilon)``, and Spark's ``1 + alpha * rating`` is then eq. 6.
``cg_steps`` and ``init_scale`` have no counterpart (Spark solves each row exactly by Cholesky).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sqlalchemy import text

from config import Settings
from Prod.als_trainer import publisher
from Prod.als_trainer.dataset import copy_interactions, index_interactions, load_item_metadata
from Prod.als_trainer.holdout import split_holdout, top_k_unseen
from Prod.common import model_store
from Prod.common.als import ALSParams
from Prod.common.db import get_engine
from Prod.common.errors import InvalidInput, TrainingError
from Prod.common.evaluation import ranking_metrics
from Prod.common.logs import get_logger
from Prod.common.stores import get_redis, redis_for

log = get_logger(__name__)

ROOT = Path(__file__).resolve().parents[2]
EVAL_USERS = 2000  # as the torch backend's holdout (split_holdout max_users)
WRITE_BATCH = 10_000  # users per write_user_factors call on an executor


def check_params(params: ALSParams) -> None:
    """Refuse what Spark's ALS cannot fit as specified.

    Spark multiplies regParam by each row's count of positive pairs and has no switch for it:
    only ``frequency_exponent = 1`` is the same objective. Rescaling regParam by a typical count
    would give users and items (whose counts differ by ~20x here) different effective lambdas
    than the tuned ones, a model nobody validated, so we refuse rather than approximate.
    """
    if params.frequency_exponent != 1.0:
        raise InvalidInput(
            f"ALS_BACKEND=spark needs frequency_exponent 1 (Spark scales regParam by each "
            f"user's and item's number of interactions, ALS-WR); the params file has "
            f"{params.frequency_exponent}: set it to 1 and retune (`reco tune`), or use "
            f"ALS_BACKEND=torch"
        )


def spark_rating(weights: np.ndarray, params: ALSParams) -> np.ndarray:
    """The rating column handed to Spark, so that its ``1 + alpha * r`` is our confidence."""
    if params.confidence == "log":
        return np.log1p(weights / params.epsilon).astype(np.float32)
    return weights.astype(np.float32, copy=False)


@lru_cache(maxsize=2)
def spark_session(master: str, driver_memory: str):
    """One SparkSession per process (starting one takes ~10 s); executors run this interpreter."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise TrainingError(
            "ALS_BACKEND=spark needs PySpark and Java 17: pip install -e '.[spark]'"
        ) from exc

    local = master.startswith("local")
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.master(master)
        .appName("reco-als-trainer")
        .config("spark.driver.memory", driver_memory)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.executorEnv.PYTHONPATH", str(ROOT))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    if local:  # ALS checkpoints its lineage every 10 iterations; a cluster needs a shared dir
        session.sparkContext.setCheckpointDir(tempfile.mkdtemp(prefix="reco-spark-ckpt-"))
    return session


def session_for(settings: Settings):
    return spark_session(settings.spark_master, settings.spark_driver_memory)


def spark_als(params: ALSParams, blocks: int):
    """Spark's estimator for these params (see the module docstring for the mapping)."""
    from pyspark.ml.recommendation import ALS

    check_params(params)
    return ALS(
        rank=params.factors,
        maxIter=params.iterations,
        regParam=params.regularization,
        alpha=params.alpha,
        implicitPrefs=True,
        nonnegative=False,
        seed=params.seed,
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
    )


RATING_SCHEMA = "user int, item int, rating float"


def factors_array(rows: Iterable, n: int, k: int) -> np.ndarray:
    """``(id, features)`` rows of a Spark factor frame -> (n, k) float32 (zeros where absent)."""
    out = np.zeros((n, k), dtype=np.float32)
    for row in rows:
        out[row[0]] = row[1]
    return out


def ratings_frame(
    spark,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    weights: np.ndarray,
    params: ALSParams,
    partitions: int = 0,
):
    """A cached ratings DataFrame of index arrays held by the driver (tests, ``reco bench``)."""
    parts = partitions or spark.sparkContext.defaultParallelism
    rating = spark_rating(np.asarray(weights, np.float32), params)
    rows = list(zip(user_idx.tolist(), item_idx.tolist(), rating.tolist(), strict=True))
    frame = spark.createDataFrame(spark.sparkContext.parallelize(rows, parts), RATING_SCHEMA)
    frame.cache().count()
    return frame


def fit_frame(
    frame, n_users: int, n_items: int, params: ALSParams, partitions: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Fit Spark ALS on a ratings frame: (user_factors (n_users, k), item_factors (n_items, k))
    float32; a row without pairs is zeros."""
    parts = partitions or frame.sparkSession.sparkContext.defaultParallelism
    model = spark_als(params, parts).fit(frame)
    users = factors_array(model.userFactors.collect(), n_users, params.factors)
    items = factors_array(model.itemFactors.collect(), n_items, params.factors)
    return users, items


def fit_arrays(
    spark,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    weights: np.ndarray,
    n_users: int,
    n_items: int,
    params: ALSParams,
    partitions: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_frame` of :func:`ratings_frame` (the frame is dropped after)."""
    frame = ratings_frame(spark, user_idx, item_idx, weights, params, partitions)
    try:
        return fit_frame(frame, n_users, n_items, params, partitions)
    finally:
        frame.unpersist()


# --- executor side: one user range per task ---------------------------------------------------


@dataclass
class Part:
    """One user range's pairs. user_ids: (u,) str sorted; user_idx: (p,) local; item_idx: (p,)
    catalogue index; train_mask: (p,) bool (holdout); eval_users: local indices held out."""

    part: int
    user_ids: np.ndarray
    user_idx: np.ndarray
    item_idx: np.ndarray
    weights: np.ndarray
    train_mask: np.ndarray
    eval_users: np.ndarray
    n_events: int
    n_disliked: int


def read_part(
    task: tuple[int, str | None, str | None],
    *,
    database_url: str,
    watermark: int,
    negative_below: float,
    catalogue,
    eval_quota: int,
    seed: int,
) -> Part:
    """Runs on an executor: COPY one user range and resolve it into pairs (the trainer's rule)."""
    part, low, high = task
    raw = copy_interactions(database_url, watermark, negative_below, users=(low, high))
    matrix = index_interactions(raw, watermark)
    index = catalogue.value
    try:
        item_map = np.fromiter((index[i] for i in matrix.item_ids), np.int64, matrix.n_items)
    except KeyError as exc:
        raise TrainingError(f"interaction of item {exc.args[0]!r}, not in the catalogue") from exc
    split = split_holdout(matrix.user_idx, matrix.n_users, max_users=eval_quota, seed=seed + part)
    return Part(
        part=part,
        user_ids=matrix.user_ids,
        user_idx=matrix.user_idx.astype(np.int32),
        item_idx=item_map[matrix.item_idx].astype(np.int32),
        weights=matrix.weights,
        train_mask=split.train_mask,
        eval_users=split.eval_users,
        n_events=matrix.n_events,
        n_disliked=matrix.n_disliked,
    )


def rating_rows(part: Part, offsets: dict[int, int], params: ALSParams, train_only: bool):
    keep = part.train_mask if train_only else slice(None)
    users = (part.user_idx[keep].astype(np.int64) + offsets[part.part]).tolist()
    rating = spark_rating(part.weights[keep], params).tolist()
    return zip(users, part.item_idx[keep].tolist(), rating, strict=True)


def user_rows(part: Part, offsets: dict[int, int]) -> Iterator[tuple[int, str]]:
    base = offsets[part.part]
    return ((base + i, str(u)) for i, u in enumerate(part.user_ids))


def eval_rows(part: Part, offsets: dict[int, int]) -> Iterator[tuple[int, list, list]]:
    """(global user id, train items, held-out items) of the range's evaluation users."""
    for local in part.eval_users.tolist():
        mine = part.user_idx == local
        train, held = mine & part.train_mask, mine & ~part.train_mask
        yield (
            offsets[part.part] + local,
            part.item_idx[train].tolist(),
            part.item_idx[held].tolist(),
        )


def write_user_partition(rows: Iterable, *, redis_url: str, version: str, written) -> None:
    """Runs on an executor: this partition's ``(user_id, features)`` rows -> the Redis hash."""
    client = get_redis(redis_url)
    ids: list[str] = []
    factors: list = []

    def flush() -> None:
        if ids:
            publisher.write_user_factors(client, version, ids, np.asarray(factors, np.float32))
            written.add(len(ids))
            ids.clear()
            factors.clear()

    for row in rows:
        ids.append(row[0])
        factors.append(row[1])
        if len(ids) >= WRITE_BATCH:
            flush()
    flush()


# --- driver side --------------------------------------------------------------------------------


def user_range_bounds(database_url: str, parts: int) -> list[tuple[int, str | None, str | None]]:
    """``parts`` user-id ranges of about equal user counts: (part, low, high), open at the ends."""
    if parts <= 1:
        return [(0, None, None)]
    quantiles = [i / parts for i in range(1, parts)]
    with get_engine(database_url).connect() as conn:
        cuts = conn.execute(
            text('select percentile_disc(:q) within group (order by user_id) from "user"'),
            {"q": quantiles},
        ).scalar_one()
    edges = [None, *sorted(set(c for c in cuts or [] if c is not None)), None]
    return [(i, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def read_catalogue(database_url: str) -> list[str]:
    with get_engine(database_url).connect() as conn:
        return list(conn.execute(text("select item_id from item order by item_id")).scalars())


def holdout_metrics(
    evals: list, user_factors: dict[int, np.ndarray], item_factors: np.ndarray, counts, k: int
) -> dict[str, float]:
    """The torch backend's holdout figures (:func:`Prod.als_trainer.holdout.evaluate_factors`)
    over the collected evaluation users; items are those with any pair (``counts`` all > 0)."""
    present = np.flatnonzero(counts["all"] > 0)
    position = np.full(len(counts["all"]), -1, np.int64)
    position[present] = np.arange(len(present))
    evals = [e for e in evals if e[0] in user_factors and e[2]]
    if not evals:
        return {}
    users_t = torch.as_tensor(np.stack([user_factors[e[0]] for e in evals]))
    items_t = torch.as_tensor(item_factors[present])
    seen_rows = [r for r, e in enumerate(evals) for _ in e[1]]
    seen_cols = position[[i for e in evals for i in e[1]]]
    seen = sp.csr_matrix(
        (np.ones(len(seen_rows), np.float32), (seen_rows, seen_cols)),
        shape=(len(evals), len(present)),
    )
    relevant = [position[e[2]].tolist() for e in evals]
    rows = np.arange(len(evals))
    model_top = top_k_unseen(lambda b: users_t[torch.as_tensor(b)] @ items_t.T, seen, rows, k)
    popularity = torch.as_tensor(counts["train"][present], dtype=torch.float32)
    popular_top = top_k_unseen(lambda b: popularity.expand(len(b), -1), seen, rows, k)
    metrics = ranking_metrics(model_top.tolist(), relevant, k, len(present))
    baseline = ranking_metrics(popular_top.tolist(), relevant, k, len(present))
    metrics.pop("users", None)
    metrics[f"popularity_ndcg@{k}"] = baseline[f"ndcg@{k}"]
    metrics[f"popularity_recall@{k}"] = baseline[f"recall@{k}"]
    metrics["eval_users"] = len(evals)
    metrics["heldout_pairs"] = sum(len(e[2]) for e in evals)
    return metrics


def train_and_publish(
    settings: Settings,
    version: str,
    params: ALSParams,
    watermark: int,
    evaluate: bool,
    stages,
    result,
) -> None:
    """The torch backend's ``_train_and_publish`` on Spark (module docstring); fills ``result``."""
    from pyspark import StorageLevel

    from Prod.als_trainer.service import mirror_pointers, model_meta, update_version

    check_params(params)
    db = settings.database_url
    spark = session_for(settings)
    sc = spark.sparkContext
    n_parts = settings.spark_partitions or sc.defaultParallelism
    with stages.stage("load"):
        catalogue_ids = read_catalogue(db)
        catalogue = sc.broadcast({item: j for j, item in enumerate(catalogue_ids)})
        bounds = user_range_bounds(db, n_parts)
        reader = partial(
            read_part,
            database_url=db,
            watermark=watermark,
            negative_below=settings.negative_rating_below,
            catalogue=catalogue,
            eval_quota=math.ceil(EVAL_USERS / len(bounds)),
            seed=params.seed,
        )
        parts = sc.parallelize(bounds, len(bounds)).map(reader)
        parts.persist(StorageLevel.MEMORY_AND_DISK)
        sizes = parts.map(
            lambda p: (p.part, len(p.user_ids), len(p.weights), p.n_events, p.n_disliked)
        )
        sizes = sorted(sizes.collect())
    try:
        with stages.stage("index"):
            offsets, total = {}, 0
            for part, n_users, *_ in sizes:
                offsets[part], total = total, total + n_users
            n_catalogue = len(catalogue_ids)

            def item_counts(p: Part) -> dict[str, np.ndarray]:
                return {
                    "all": np.bincount(p.item_idx, minlength=n_catalogue),
                    "train": np.bincount(p.item_idx[p.train_mask], minlength=n_catalogue),
                }

            counts = parts.map(item_counts).reduce(lambda a, b: {key: a[key] + b[key] for key in a})
            result.counts = {
                "n_users": total,
                "n_items": int((counts["all"] > 0).sum()),
                "n_interactions": sum(s[3] for s in sizes),
                "n_pairs": sum(s[2] for s in sizes),
                "n_disliked_pairs": sum(s[4] for s in sizes),
            }
            if total == 0:
                raise TrainingError("no positive interactions to train on")

            def ratings(train_only: bool):
                rows = parts.flatMap(lambda p: rating_rows(p, offsets, params, train_only))
                return spark.createDataFrame(rows, RATING_SCHEMA)

        if evaluate:
            with stages.stage("evaluate"):
                model = spark_als(params, n_parts).fit(ratings(train_only=True))
                evals = parts.flatMap(lambda p: eval_rows(p, offsets)).collect()
                wanted = [e[0] for e in evals]
                factors = {
                    r[0]: np.asarray(r[1], np.float32)
                    for r in model.userFactors.where(model.userFactors.id.isin(wanted)).collect()
                }
                items = factors_array(model.itemFactors.collect(), n_catalogue, params.factors)
                result.metrics = holdout_metrics(evals, factors, items, counts, k=10)
        with stages.stage("train"):
            model = spark_als(params, n_parts).fit(ratings(train_only=False))
            item_rows = sorted(model.itemFactors.collect())
            item_ids = [catalogue_ids[r[0]] for r in item_rows]
            item_np = np.asarray([r[1] for r in item_rows], np.float32).reshape(-1, params.factors)
            if not np.isfinite(item_np).all():
                raise TrainingError("Spark ALS produced non-finite item factors")
        trained_at = datetime.now(timezone.utc)
        with stages.stage("register"):
            update_version(
                db,
                version,
                trained_at=trained_at,
                n_users=total,
                n_items=len(item_ids),
                n_interactions=result.counts["n_interactions"],
                metrics=result.metrics,
                durations=stages.durations,
            )
        with stages.stage("item_metadata"):
            metadata = load_item_metadata(db, np.asarray(item_ids, dtype=object))
        meta = model_meta(
            version,
            params,
            watermark,
            total,
            len(item_ids),
            result.counts["n_interactions"],
            trained_at,
        )
        client = redis_for(settings)
        with stages.stage("publish_users"):
            names = spark.createDataFrame(
                parts.flatMap(lambda p: user_rows(p, offsets)), "id int, user_id string"
            )
            written = sc.accumulator(0)
            model.userFactors.join(names, "id").select("user_id", "features").foreachPartition(
                partial(
                    write_user_partition,
                    redis_url=settings.redis_url,
                    version=version,
                    written=written,
                )
            )
            stored = client.hlen(model_store.user_factors_key(version))
            if written.value != total or stored != total:
                raise TrainingError(
                    f"user factors: {written.value} written, {stored} stored, {total} expected"
                )
        with stages.stage("publish_items"):  # Chroma is filled after the switch (publisher)
            publisher.write_items(client, version, item_ids, item_np, metadata)
        with stages.stage("verify"):
            publisher.verify_items(client, meta, item_ids, item_np)
            publisher.write_meta(client, publisher.items_in_redis(meta))
        with stages.stage("switch"):
            before = publisher.switch_active(client, version)
            mirror_pointers(db, publisher.read_pointers(client))
    finally:
        parts.unpersist()
        catalogue.unpersist()
    result.previous_version = before.active
    result.status = "active"
    log.info("[%s] spark: %d users, %d items on %s", version, total, len(item_ids), sc.master)
