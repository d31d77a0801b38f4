"""One training run, end to end, plus rollback and the status report.

A run: take the Redis lock -> decide whether there is new data -> read interactions from Postgres ->
index maps -> holdout evaluation (a fit on the data minus held-out pairs) -> that fit finished
on all data by a few warm-started iterations (a full cold fit with ``--no-eval``) -> register in
``model_version`` -> publish (Redis user factors, Redis item factors, verify, meta) -> atomic
switch (Redis, mirrored in Postgres) -> the Chroma item collection filled from Redis (after the
switch: a failure there leaves the new version active) -> delete versions beyond
``settings.keep_model_versions``. The HTTP service, the scheduler and ``reco train`` all call
:func:`run_training`.

If any stage before the switch fails, the partial keys/collection of the new version are removed,
its registry row says ``failed`` with the error, and the previously active version stays active.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import redis
import torch
from sqlalchemy import func, select, update

from config import Settings
from Prod.als_trainer import publisher
from Prod.als_trainer.dataset import (
    InteractionMatrix,
    copy_interactions,
    index_interactions,
    load_item_metadata,
    read_watermark,
)
from Prod.als_trainer.holdout import evaluate_factors, split_holdout
from Prod.als_trainer.lock import TrainerLock, lock_holder, reap_dead_lock
from Prod.als_trainer.metrics import TRAINER_METRICS
from Prod.common import model_store
from Prod.common.als import ALSParams, build_user_items, fit_als
from Prod.common.db import postgres_errors, session_scope
from Prod.common.errors import Conflict, InfraError
from Prod.common.logs import get_logger
from Prod.common.models import ModelVersion
from Prod.common.stores import chroma_for, redis_for

log = get_logger(__name__)

STAGES = (
    "load",
    "index",
    "evaluate",
    "train",
    "register",
    "item_metadata",
    "publish_users",
    "publish_items",
    "verify",
    "switch",
    "index_items",
    "cleanup",
)
# a version left by rollback; a no-body rollback with this one as ``previous`` changes nothing
ROLLED_BACK = "rolled_back"
PUBLISHED_STATUSES = ("active", "retired", ROLLED_BACK)
FINISHED_STATUSES = (*PUBLISHED_STATUSES, "failed")
DEAD_RUN_ERROR = "trainer stopped without finishing (killed or crashed): its lock heartbeat stopped"

StageHook = Callable[[str], None]  # called with a stage name just before the stage starts


@dataclass
class RunResult:
    """What one call of :func:`run_training` did.

    status: ``active`` (trained and switched), ``skipped`` (nothing new), ``locked`` (another
    trainer runs; ``version_id`` is that run's), or ``failed`` (``error`` says why).
    """

    status: str
    version_id: str | None
    reason: str = ""
    previous_version: str | None = None
    data_watermark: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    deleted_versions: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- small pieces ---------------------------------------------------------------------------


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn "Redis / Postgres unreachable" into :class:`InfraError` (503) naming the store."""
    try:
        with postgres_errors("the model registry"):
            yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("redis unreachable (the model pointers): %s", exc)
        raise InfraError(
            "Redis is unavailable (the model pointers); try again shortly", store="redis"
        ) from exc


def load_params(path: Path) -> ALSParams:
    """Hyperparameters from the params file (written by ``reco tune``); defaults when absent."""
    if Path(path).exists():
        return ALSParams.from_file(path)
    log.info("no ALS params file at %s; using the defaults", path)
    return ALSParams()


def last_trained_watermark(database_url: str) -> int:
    """Watermark of the newest successfully published model (0 when none)."""
    with session_scope(database_url) as session:
        return int(
            session.scalar(
                select(func.coalesce(func.max(ModelVersion.data_watermark), 0)).where(
                    ModelVersion.status.in_(PUBLISHED_STATUSES)
                )
            )
        )


def nothing_new(settings: Settings, watermark: int) -> str | None:
    """Why a scheduled run can skip (None: it must train).

    Compared with the newest published model rather than the active one, so a rollback is not
    undone by retraining on the very same data at the next tick.
    """
    if watermark == 0:
        return "no interactions in the database"
    if model_store.active_version(redis_for(settings)) is None:
        return None
    last = last_trained_watermark(settings.database_url)
    if watermark <= last:
        return f"no new interactions since watermark {last}"
    return None


def skip_reason(settings: Settings) -> tuple[str | None, int]:
    """(why a non-forced run would be skipped, or None; the current data watermark)."""
    watermark = read_watermark(settings.database_url)
    if watermark == 0:
        return "no interactions in the database", 0
    return nothing_new(settings, watermark), watermark


def fit_factors(
    matrix: InteractionMatrix,
    mask: np.ndarray | None,
    params: ALSParams,
    device: str,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Fit on the pairs selected by ``mask`` (all when None); factors on the CPU, float32.

    ``start``: (user_factors, item_factors) to warm start from.
    """
    sel = slice(None) if mask is None else mask
    user_items = build_user_items(
        torch.from_numpy(matrix.user_idx[sel]),
        torch.from_numpy(matrix.item_idx[sel]),
        torch.from_numpy(matrix.weights[sel]),
        matrix.n_users,
        matrix.n_items,
    )
    users, items = start if start is not None else (None, None)
    model = fit_als(user_items, params, device=device, user_factors=users, item_factors=items)
    return model.user_factors.cpu(), model.item_factors.cpu(), model.losses


def _error_text(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"[:2000]


class _Stages:
    """Times each stage, logs it and calls the hook (``reco train`` draws its progress from the
    hook; the service prints nothing)."""

    def __init__(self, version: str, hook: StageHook | None) -> None:
        self.version = version
        self.hook = hook
        self.durations: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.hook:
            self.hook(name)
        start = time.perf_counter()
        yield
        self.durations[name] = round(time.perf_counter() - start, 4)
        log.info("[%s] %s done in %.2f s", self.version, name, self.durations[name])


# --- registry -------------------------------------------------------------------------------


def register_version(database_url: str, version: str, watermark: int, params: dict) -> None:
    with session_scope(database_url) as session:
        session.add(
            ModelVersion(
                version_id=version, status="training", data_watermark=watermark, params=params
            )
        )


def update_version(database_url: str, version: str, **values: Any) -> None:
    with session_scope(database_url) as session:
        session.execute(
            update(ModelVersion).where(ModelVersion.version_id == version).values(**values)
        )


def mirror_pointers(database_url: str, pointers: publisher.Pointers) -> None:
    """Make the registry agree with Redis: the active pointer's row ``active``, others retired."""
    now = datetime.now(timezone.utc)
    with session_scope(database_url) as session:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.status == "active", ModelVersion.version_id != pointers.active)
            .values(status="retired")
        )
        if pointers.active:
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.version_id == pointers.active)
                .values(status="active", activated_at=now)
            )


# --- the run --------------------------------------------------------------------------------


def run_training(
    settings: Settings,
    *,
    force: bool = False,
    evaluate: bool = True,
    version_id: str | None = None,
    lock: TrainerLock | None = None,
    on_stage: StageHook | None = None,
) -> RunResult:
    """Run once (see the module docstring). ``lock``: an already acquired lock (it is released
    here); without one, this call takes the lock and returns status ``locked`` if it cannot.
    ``on_stage`` is called with each stage's name (:data:`STAGES` order) as it starts. Every
    outcome is counted in :data:`Prod.als_trainer.metrics.TRAINER_METRICS`."""
    client = redis_for(settings)
    version = version_id or publisher.new_version_id()
    if lock is None:
        fail_dead_runs(settings)  # a killed trainer's lock must not block this run for a TTL
        lock = TrainerLock(client, version, settings.train_lock_ttl_s)
        if not lock.acquire():
            holder = lock_holder(client)
            return TRAINER_METRICS.record_run(
                RunResult("locked", holder, reason=f"another training run ({holder}) is going")
            )
    try:
        result = _run_locked(settings, version, force=force, evaluate=evaluate, on_stage=on_stage)
    except Exception:  # e.g. Postgres down before the run registered itself
        TRAINER_METRICS.record_run(RunResult("failed", version))
        raise
    finally:
        lock.release()
    return TRAINER_METRICS.record_run(result)


def _run_locked(
    settings: Settings, version: str, *, force: bool, evaluate: bool, on_stage: StageHook | None
) -> RunResult:
    db = settings.database_url
    reason, watermark = skip_reason(settings)
    if reason and (watermark == 0 or not force):
        log.info("training skipped: %s", reason)
        return RunResult("skipped", None, reason=reason, data_watermark=watermark)

    params = load_params(settings.als_params_path)
    result = RunResult("training", version, data_watermark=watermark, params=params.to_dict())
    register_version(db, version, watermark, result.params)
    stages = _Stages(version, on_stage)
    log.info("[%s] training run started (watermark %d, force=%s)", version, watermark, force)
    try:
        _train_and_publish(settings, version, params, watermark, evaluate, stages, result)
    except Exception as exc:  # any failure: keep the old model, record why
        result.status, result.error = "failed", _error_text(exc)
        result.durations = dict(stages.durations)
        log.error("[%s] training run failed: %s", version, result.error)
        _discard(settings, version)
        update_version(
            db,
            version,
            status="failed",
            error=result.error,
            durations=result.durations,
            metrics=result.metrics,
        )
        return result

    with stages.stage("cleanup"):
        try:
            result.deleted_versions = publisher.cleanup_versions(
                redis_for(settings), chroma_for(settings), settings.keep_model_versions
            )
        except Exception as exc:  # the new model is live; a failed cleanup is only logged
            log.warning("[%s] cleanup of old versions failed: %s", version, _error_text(exc))
    result.durations = dict(stages.durations)
    result.durations["total"] = round(sum(stages.durations.values()), 4)
    update_version(db, version, durations=result.durations)
    log.info("[%s] active; total %.2f s", version, result.durations["total"])
    return result


def _train_and_publish(
    settings: Settings,
    version: str,
    params: ALSParams,
    watermark: int,
    evaluate: bool,
    stages: _Stages,
    result: RunResult,
) -> None:
    if settings.als_backend == "spark":  # imported here: pyspark is an extra, and heavy
        from Prod.als_trainer.spark_backend import train_and_publish

        train_and_publish(settings, version, params, watermark, evaluate, stages, result)
        fill_item_indexes(settings, version, stages.stage)
        return None
    db = settings.database_url
    with stages.stage("load"):
        raw = copy_interactions(db, watermark, settings.negative_rating_below)
    with stages.stage("index"):
        matrix = index_interactions(raw, watermark)
        del raw
    result.counts = {
        "n_users": matrix.n_users,
        "n_items": matrix.n_items,
        "n_interactions": matrix.n_events,
        "n_pairs": matrix.nnz,
        "n_disliked_pairs": matrix.n_disliked,
    }
    holdout_fit, train_params = None, params
    if evaluate:
        with stages.stage("evaluate"):
            split = split_holdout(matrix.user_idx, matrix.n_users, seed=params.seed)
            users, items, _ = fit_factors(matrix, split.train_mask, params, settings.als_device)
            result.metrics = evaluate_factors(
                users, items, matrix.user_idx, matrix.item_idx, split, k=10
            )
            # the holdout fit saw all but a few pairs: a few warm-started sweeps on all the data
            # finish it (same loss as a cold fit, ~0.1% on small data) instead of a second fit
            holdout_fit = (users, items)
            train_params = replace(params, iterations=settings.train_refit_iterations)
    with stages.stage("train"):
        user_factors, item_factors, losses = fit_factors(
            matrix, None, train_params, settings.als_device, start=holdout_fit
        )
        user_np = user_factors.numpy().astype(np.float32, copy=False)
        item_np = item_factors.numpy().astype(np.float32, copy=False)
        if losses:
            result.metrics["final_loss"] = float(losses[-1])
    trained_at = datetime.now(timezone.utc)
    with stages.stage("register"):
        update_version(
            db,
            version,
            trained_at=trained_at,
            n_users=matrix.n_users,
            n_items=matrix.n_items,
            n_interactions=matrix.n_events,
            metrics=result.metrics,
            durations=stages.durations,
        )
    with stages.stage("item_metadata"):
        metadata = load_item_metadata(db, matrix.item_ids)
    factors = publisher.FactorSet(
        matrix.user_ids.tolist(), user_np, matrix.item_ids.tolist(), item_np, metadata
    )
    meta = model_meta(
        version, params, watermark, matrix.n_users, matrix.n_items, matrix.n_events, trained_at
    )
    before = publish_and_activate(settings, meta, factors, stages.stage)
    result.previous_version = before.active
    result.status = "active"


def model_meta(
    version: str,
    params: ALSParams,
    watermark: int,
    n_users: int,
    n_items: int,
    n_events: int,
    trained_at: datetime,
) -> model_store.ModelMeta:
    """The meta hash of a version (the contract's fields + the trainer's extras)."""
    return model_store.ModelMeta(
        version=version,
        dim=params.factors,
        n_users=n_users,
        n_items=n_items,
        collection=model_store.item_collection_name(version),
        alpha=params.alpha,
        regularization=params.regularization,
        confidence=params.confidence,
        trained_at=trained_at.isoformat(),
        extra={
            "data_watermark": str(watermark),
            "n_interactions": str(n_events),
            "params": json.dumps(params.to_dict(), sort_keys=True),
        },
    )


def publish_and_activate(
    settings: Settings,
    meta: model_store.ModelMeta,
    factors: publisher.FactorSet,
    stage: Callable[[str], Any] = publisher.untimed,
    fill: bool = True,
) -> publisher.Pointers:
    """Publish a complete version, then switch to it and mirror the switch in Postgres; then
    (``fill``) write its Chroma collection (:func:`fill_item_indexes`).

    Returns the pointers from before the switch. Does not clean up on failure (the caller does).
    """
    client = redis_for(settings)
    publisher.publish_version(client, chroma_for(settings), meta, factors, stage)
    with stage("switch"):
        before = publisher.switch_active(client, meta.version)
        mirror_pointers(settings.database_url, publisher.read_pointers(client))
    if fill:
        fill_item_indexes(settings, meta.version, stage)
    return before


def fill_item_indexes(
    settings: Settings, version: str, stage: Callable[[str], Any] = publisher.untimed
) -> dict[str, str]:
    """Fill the Chroma collection of ``version`` (already active), then of any retained version
    a crashed or failed fill left incomplete; {version: state}. Never raises: the models are
    live and served from Redis whatever happens to their Chroma copy."""
    states: dict[str, str] = {}
    try:
        with stage("index_items"):
            client, chroma = redis_for(settings), chroma_for(settings)
            others = [v for v in publisher.pending_item_indexes(client) if v != version]
            for each in [version, *others]:
                try:
                    publisher.fill_item_index(client, chroma, each)
                    states[each] = model_store.INDEX_COMPLETE
                except Exception as exc:
                    states[each] = model_store.INDEX_FAILED
                    log.warning("[%s] chroma item index failed: %s", each, _error_text(exc))
    except Exception as exc:  # the hook, or Redis gone between the switch and here
        states.setdefault(version, model_store.INDEX_FAILED)
        log.warning("[%s] chroma item index not filled: %s", version, _error_text(exc))
    return states


def _discard(settings: Settings, version: str) -> None:
    """Remove whatever a failed run wrote, unless it became active (then it stays, and works)."""
    try:
        publisher.delete_version(redis_for(settings), chroma_for(settings), version)
    except Exception as exc:
        log.warning("[%s] could not remove the failed version's data: %s", version, exc)


# --- rollback, dead runs and status --------------------------------------------------------


def rollback(settings: Settings, version: str | None = None) -> dict[str, Any]:
    """Re-activate ``version`` (default: the recorded previous one); says what it did.

    Idempotent: the version rolled back from is marked ``rolled_back`` in the registry, and a
    rollback whose previous version is marked so (a retry of one that succeeded) changes nothing.
    Raises Conflict (no previous version; ``version`` unknown, failed or no longer published;
    pointers moved meanwhile) and InfraError (503, naming the store) when Redis or Postgres is
    down.

    Order, so that a failure leaves registry and pointer agreeing: (1) read the Redis pointers;
    (2) in one Postgres transaction lock the rows and write the new statuses, flushed but not
    committed (Postgres down: nothing changed anywhere); (3) compare-and-set both Redis pointers
    (Redis down or pointers moved: the transaction rolls back, nothing changed); (4) commit, and
    if the commit fails put the pointers back (compare-and-set again). Postgres goes first because
    its writes can wait uncommitted while Redis is written; the reverse would expose the new
    pointer to the engines before knowing Postgres can record it. Left: a connection lost during
    step 3's EXEC or step 4's commit with the other store failing too; the next run's switch
    mirrors Redis into the registry again.
    """
    with store_errors():
        client = redis_for(settings)
        before = publisher.read_pointers(client)
        with session_scope(settings.database_url) as session:
            wanted = version or before.previous
            if wanted is None:
                raise Conflict("no previous model version to roll back to", active=before.active)
            rows = {
                row.version_id: row
                for row in session.scalars(
                    select(ModelVersion)
                    .where(ModelVersion.version_id.in_({wanted, before.active} - {None}))
                    .with_for_update()
                )
            }
            target = rows.get(wanted)
            if wanted == before.active or (
                version is None and target is not None and target.status == ROLLED_BACK
            ):
                log.info("rollback: nothing to do, %s is active", before.active)
                return _rollback_answer(before, changed=False)
            if target is None or target.status not in PUBLISHED_STATUSES:
                raise Conflict(
                    f"version {wanted} is not a published model version",
                    active=before.active,
                    status=target and target.status,
                )
            if not client.exists(model_store.meta_key(wanted)):
                raise Conflict(
                    f"version {wanted} is no longer published",
                    active=before.active,
                    previous=before.previous,
                )
            after = publisher.Pointers(active=wanted, previous=before.active)
            target.status, target.activated_at = "active", datetime.now(timezone.utc)
            if before.active in rows:
                rows[before.active].status = ROLLED_BACK
            session.execute(  # one active row, even if the registry had drifted from Redis
                update(ModelVersion)
                .where(
                    ModelVersion.status == "active",
                    ModelVersion.version_id.not_in({wanted, before.active} - {None}),
                )
                .values(status="retired")
            )
            session.flush()  # step 2: Postgres took the writes (and holds the row locks)
            publisher.set_pointers(client, before, after)  # step 3; raising rolls back step 2
            try:
                session.commit()  # step 4
            except Exception:
                _restore_pointers(client, after, before)
                raise
    log.info("rolled back: active %s (was %s)", after.active, before.active)
    return _rollback_answer(after, changed=True, rolled_back_from=before.active)


def _restore_pointers(client, now: publisher.Pointers, back: publisher.Pointers) -> None:
    try:
        publisher.set_pointers(client, now, back)
        log.warning("rollback not recorded in postgres: pointers restored to %s", back.active)
    except Exception as exc:  # both stores failing at once; the registry is behind Redis
        log.error("rollback: could not restore the pointers to %s: %s", back.active, exc)


def _rollback_answer(
    pointers: publisher.Pointers, *, changed: bool, rolled_back_from: str | None = None
) -> dict[str, Any]:
    message = (
        f"rolled back from {rolled_back_from} to {pointers.active}"
        if changed
        else f"{pointers.active} is already active; nothing changed"
    )
    return {
        "active": pointers.active,
        "previous": pointers.previous,
        "changed": changed,
        "rolled_back_from": rolled_back_from,
        "message": message,
    }


def fail_dead_runs(settings: Settings) -> list[str]:
    """Mark ``failed`` every registry row still ``training`` whose run is dead; returns them.

    A run registers its row only while it holds the lock, and finishes its row before releasing
    it; so a ``training`` row whose version does not hold a live lock is dead. A lock without a
    live heartbeat is removed first (:func:`reap_dead_lock`). The rows are read before the lock
    holder, so a run that starts in between is never mistaken for a dead one; the update only
    touches rows still ``training``.
    """
    client = redis_for(settings)
    reaped = reap_dead_lock(client)
    with session_scope(settings.database_url) as session:
        training = list(
            session.scalars(
                select(ModelVersion.version_id).where(ModelVersion.status == "training")
            )
        )
        holder = lock_holder(client)
        dead = [v for v in training if v != holder]
        if dead:
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.version_id.in_(dead), ModelVersion.status == "training")
                .values(status="failed", error=f"{DEAD_RUN_ERROR}; marked failed at {now}")
            )
    for version in dead:
        log.warning("[%s] marked failed: %s", version, DEAD_RUN_ERROR)
        _discard(settings, version)
    if reaped and reaped not in dead:
        log.warning("removed the lock of run %s, which never registered", reaped)
    return dead


def running_run(settings: Settings) -> dict[str, Any] | None:
    """The run holding the lock, in any process: version id and start (from the registry)."""
    holder = lock_holder(redis_for(settings))
    if holder is None:
        return None
    with session_scope(settings.database_url) as session:
        row = session.get(ModelVersion, holder)
        return {
            "version_id": holder,
            "stage": None,
            "started_at": row.created_at if row else None,
            "forced": None,
        }


def describe_version(row: ModelVersion | None, version: str | None = None) -> dict | None:
    if row is None:
        return {"version_id": version} if version else None
    return {
        "version_id": row.version_id,
        "status": row.status,
        "created_at": row.created_at,
        "trained_at": row.trained_at,
        "activated_at": row.activated_at,
        "data_watermark": row.data_watermark,
        "n_users": row.n_users,
        "n_items": row.n_items,
        "n_interactions": row.n_interactions,
        "params": row.params,
        "metrics": row.metrics,
        "durations": row.durations,
        "error": row.error,
    }


def read_status(settings: Settings) -> dict[str, Any]:
    """Active/previous version, the last finished run, and the run in progress (any process).

    Dead runs are marked failed first (:func:`fail_dead_runs`), so none is reported running.
    """
    with store_errors():
        fail_dead_runs(settings)
        client = redis_for(settings)
        pointers = publisher.read_pointers(client)
        running = running_run(settings)
        with session_scope(settings.database_url) as session:

            def row(version: str | None) -> ModelVersion | None:
                return session.get(ModelVersion, version) if version else None

            last = session.scalars(
                select(ModelVersion)
                .where(ModelVersion.status.in_(FINISHED_STATUSES))
                .order_by(ModelVersion.created_at.desc(), ModelVersion.version_id.desc())
                .limit(1)
            ).first()
            return {
                "active": describe_version(row(pointers.active), pointers.active),
                "previous": describe_version(row(pointers.previous), pointers.previous),
                "last_run": describe_version(last),
                "running": running,
            }
