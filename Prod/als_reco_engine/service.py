"""The serving engine: one object per app holding the hot-swapped item index, the user caches
(profiles, fold-ins) and the background workers; it answers ``recommend``, ``similar`` and
``status``. Interactions, the history and stored lists are plain functions in
:mod:`.interactions`, :mod:`.history` and :mod:`.lists`, given the engine's state they need.

Hot path of ``recommend`` (an ALS user with a cached profile): one Redis HGET for the user factor,
one (n_items x dim) float32 mat-vec (batched with the other requests of the same event-loop turn,
:mod:`.batching`), an argpartition, no Postgres; the response JSON is joined from bytes
precomputed per item.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import redis
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from config import Settings
from Prod.als_reco_engine.ann import AnnIndexes, ann_top_k
from Prod.als_reco_engine.batching import BatchScorer
from Prod.als_reco_engine.content import CONTENT, ContentIndex, fresh_count, mixed
from Prod.als_reco_engine.deleted_items import DeletedItems
from Prod.als_reco_engine.explain import explain_rows
from Prod.als_reco_engine.foldin import FoldInCache, solve_user_factor
from Prod.als_reco_engine.guard import CircuitBreaker, StoreUnavailable
from Prod.als_reco_engine.history import HistoryWriter
from Prod.als_reco_engine.index import (
    Catalogue,
    IndexHolder,
    ItemFilters,
    ItemIndex,
    build_index,
    describe_items,
    filter_mask,
    items_json,
    round_scores,
    top_k,
)
from Prod.als_reco_engine.metrics import RecoMetrics
from Prod.als_reco_engine.popularity import PopularityRefresher
from Prod.als_reco_engine.profiles import ProfileCache, ProfileInvalidations, UserProfile
from Prod.common import model_store
from Prod.common.db import get_engine
from Prod.common.errors import InfraError, ModelNotReady, NotFound
from Prod.common.experiment import ARM_B, Experiment, arm_of, running_experiment
from Prod.common.feedback import category_share, dislike_push
from Prod.common.logs import get_logger
from Prod.common.models import ModelVersion
from Prod.common.stores import chroma_for, redis_for, redis_from_url

log = get_logger(__name__)

ALS, FOLD_IN, POPULAR = "als", "fold_in", "popular"
SERVING_REDIS_TIMEOUT_S = 0.25  # the hot path never waits longer on Redis than this


@dataclass(frozen=True)
class Recommendation:
    """One served top-k: rows of ``catalogue`` best first with their rounded scores."""

    user_id: str
    strategy: str
    model_version: str | None
    catalogue: Catalogue
    rows: np.ndarray
    scores: list[float]
    extras: tuple[dict, ...] | None = None  # per item: its strategy when mixed, explanation

    def item_ids(self) -> list[str]:
        item_ids = self.catalogue.item_ids
        return [item_ids[row] for row in self.rows.tolist()]

    def as_dict(self) -> dict[str, Any]:
        """The response document (``RecommendationOut``) as plain Python values."""
        items = describe_items(self.catalogue, self.rows, self.scores)
        if self.extras is not None:
            items = [{**item, **extra} for item, extra in zip(items, self.extras, strict=True)]
        return {**self._head(), "items": items}

    def to_json(self) -> bytes:
        """The response document encoded directly (item JSON precomputed per catalogue row)."""
        if self.extras is not None:  # mixed or explained: rare, built as dicts
            return orjson.dumps(self.as_dict())
        return orjson.dumps(
            {**self._head(), "items": items_json(self.catalogue, self.rows, self.scores)}
        )

    def _head(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "strategy": self.strategy,
            "model_version": self.model_version,
        }


class RecoEngine:
    """Index, caches and workers of one serving process."""

    def __init__(
        self,
        settings: Settings,
        *,
        poll_interval_s: float = 1.0,
        popularity_interval_s: float = 60.0,
        profile_ttl_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.db = get_engine(settings.database_url)
        # a client of its own: short timeouts so an unreachable Redis costs one fast failure
        self.redis = redis_from_url(
            settings.redis_url,
            socket_timeout=SERVING_REDIS_TIMEOUT_S,
            socket_connect_timeout=SERVING_REDIS_TIMEOUT_S,
        )
        self._factor_redis: redis.Redis | None = None  # the hot path's own connection
        self.redis_guard = CircuitBreaker("redis", (redis.RedisError, OSError))
        self.holder = IndexHolder(
            poll=self._read_active_pointer,
            load=self._load_index,
            interval_s=poll_interval_s,
            on_swap=self._on_swap,
        )
        # A/B test (Prod.common.experiment): arm B's version loaded like the active one
        self.experiment: Experiment | None = None
        self.arm_b = IndexHolder(
            poll=self._read_experiment, load=self._load_index, interval_s=poll_interval_s
        )
        negative_below = settings.negative_rating_below
        # replicas tell each other whose profile changed (Redis pub/sub), not only the TTL
        self.invalidations = ProfileInvalidations(settings.redis_url, self._forget_remote)
        self.profiles = ProfileCache(
            self.db,
            ttl_s=profile_ttl_s,
            negative_below=negative_below,
            invalidations=self.invalidations,
        )
        self.fold_ins = FoldInCache(settings.fold_in_cache_s)
        self.popularity = PopularityRefresher(
            self.db, interval_s=popularity_interval_s, negative_below=negative_below
        )
        self.history = HistoryWriter(self.db, max_buffered=settings.history_max_buffered)
        self.deleted = DeletedItems(self.redis, self.db)  # deleted since the model was trained
        self.scorer = BatchScorer()
        self.ann = AnnIndexes(settings.ann_min_items)  # large catalogues: approximate top-k
        self.content = ContentIndex(
            lambda: chroma_for(settings).get_collection(settings.products_collection),
            self._known_items,
            interval_s=popularity_interval_s,
        )
        self.metrics = RecoMetrics((ALS, FOLD_IN, POPULAR))
        self._written_since_load: set[str] = set()  # users with events newer than the index
        self.started_at = datetime.now(timezone.utc)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load what is published now (so the first request is served), then start workers."""
        self.holder.refresh()
        self.arm_b.refresh()
        self.popularity.refresh()
        self.content.refresh()
        self.holder.start()
        self.arm_b.start()
        self.popularity.start()
        self.content.start()
        self.history.start()
        self.invalidations.start()
        self.deleted.start()

    def stop(self) -> None:
        self.holder.stop()
        self.ann.stop()
        self.arm_b.stop()
        self.popularity.stop()
        self.content.stop()
        self.history.stop()
        self.invalidations.stop()
        self.deleted.stop()
        if self._factor_redis is not None:
            self._factor_redis.close()

    # --- loading the index ----------------------------------------------------------------

    def _read_active_pointer(self) -> str | None:
        return model_store.active_version(self.redis)

    def _read_experiment(self) -> str | None:
        """Arm B's version of the running experiment (None: none runs, its index is let go)."""
        experiment = running_experiment(self.redis)
        self.experiment = experiment
        if experiment is None:
            self.arm_b.current = None
            return None
        return experiment.version_b

    def index_for(self, user_id: str) -> ItemIndex | None:
        """The index serving ``user_id``: arm B's when the user is in arm B of the running
        experiment and it is loaded, else the active one."""
        experiment = self.experiment
        if experiment is not None and arm_of(experiment, user_id) == ARM_B:
            index = self.arm_b.current
            if index is not None and index.version == experiment.version_b:
                return index
        return self.holder.current

    def _load_index(self, version: str) -> ItemIndex:
        meta = model_store.read_meta(self.redis, version)
        if meta is None:
            raise ModelNotReady(f"model {version} has no meta hash")
        started = time.perf_counter()
        # the Redis items hash (Chroma only for versions published before it existed); the
        # pooled client's 2 s timeout, not the hot path's 0.25 s: a chunk is 16 MiB
        item_ids, factors, metadatas = model_store.load_items(
            redis_for(self.settings), meta, lambda: chroma_for(self.settings)
        )
        index = build_index(meta, item_ids, factors, metadatas, self._watermark(meta))
        log.info(
            "loaded model %s: %d items x %d in %.1f s",
            version,
            len(item_ids),
            meta.dim,
            time.perf_counter() - started,
        )
        return index

    def _watermark(self, meta: model_store.ModelMeta) -> int | None:
        """Highest interaction id in the version's training data, when the trainer recorded it."""
        raw = meta.extra.get("data_watermark")
        if raw is None:
            try:
                with self.db.connect() as conn:
                    raw = conn.scalar(
                        select(ModelVersion.data_watermark).where(
                            ModelVersion.version_id == meta.version
                        )
                    )
            except SQLAlchemyError:
                raw = None
        watermark = int(raw) if raw not in (None, "") else 0
        return watermark or None  # 0 = not recorded

    def _on_swap(self, index: ItemIndex) -> None:
        self._written_since_load = set()
        # the index's ~10^5 long-lived objects leave the collector's generations: a full
        # collection would otherwise walk them all, a pause of tens of ms in some request
        gc.freeze()
        self.ann.switch(index)  # built in the background; exact serves until it is ready

    # --- user factors ---------------------------------------------------------------------

    async def profile(self, user_id: str) -> UserProfile:
        cached = self.profiles.cached(user_id)
        if cached is not None:
            return cached
        return await run_in_threadpool(self.load_profile, user_id)

    def load_profile(self, user_id: str) -> UserProfile:
        try:
            return self.profiles.get(user_id)
        except SQLAlchemyError as exc:
            raise InfraError(
                "PostgreSQL is unavailable (the interaction database); try again shortly",
                store="postgres",
            ) from exc

    def _has_new_events(self, index: ItemIndex, profile: UserProfile) -> bool:
        if profile.user_id in self._written_since_load:
            return True
        return index.data_watermark is not None and (
            profile.last_interaction_id > index.data_watermark
        )

    def user_factor(self, index: ItemIndex, profile: UserProfile) -> tuple[np.ndarray | None, str]:
        """(factor (dim,) float32 or None, strategy). Redis first, fold-in when it has nothing,
        is out of date for this user, or is unreachable."""
        if profile.has_interactions and self._has_new_events(index, profile):
            return self._fold_in(index, profile), FOLD_IN
        try:
            factor = self.redis_guard.call(
                lambda: model_store.read_user_factor(
                    self._factor_client(), index.meta, profile.user_id
                )
            )
        except StoreUnavailable:
            factor = None
        if factor is not None:
            return factor, ALS
        if profile.has_interactions:
            return self._fold_in(index, profile), FOLD_IN
        return None, POPULAR

    def _factor_client(self) -> redis.Redis:
        """A single-connection client for the request loop's one HGET: it skips the pool's
        per-command checkout and socket probe (measured 0.10 -> 0.05 ms CPU a call). Created on
        first use, inside the circuit breaker, so a Redis down at start-up stops nothing."""
        if self._factor_redis is None:
            self._factor_redis = redis_from_url(
                self.settings.redis_url,
                socket_timeout=SERVING_REDIS_TIMEOUT_S,
                socket_connect_timeout=SERVING_REDIS_TIMEOUT_S,
                single_connection_client=True,
            )
        return self._factor_redis

    def _fold_in(self, index: ItemIndex, profile: UserProfile) -> np.ndarray | None:
        cached = self.fold_ins.get(index.version, profile.user_id)
        if cached is not None:
            return cached
        rows = profile.rows_for(index.catalogue)
        if rows.liked.size == 0:  # none of their liked items is in this model
            return None
        start = time.perf_counter()
        factor = solve_user_factor(index, rows.liked, rows.weights)  # dislikes add no confidence
        self.metrics.fold_in_seconds.observe(time.perf_counter() - start)
        self.fold_ins.put(index.version, profile.user_id, factor)
        return factor

    # --- recommending ---------------------------------------------------------------------

    async def recommend(
        self,
        user_id: str,
        *,
        k: int,
        exclude_seen: bool,
        filters: ItemFilters,
        log_history: bool = True,
        explain: bool = False,
    ) -> Recommendation:
        """Top-k for a user with the best strategy available (als > fold_in > popular).

        Suppressed and disliked items are never returned (seen ones unless ``exclude_seen`` is
        off), and items like the disliked ones are pushed down (:meth:`_push_away`). Fresh
        items are mixed in (``FRESH_SHARE``) and ``explain`` explains each item
        (:meth:`_decorate`).
        """
        profile = self.profiles.cached(user_id)
        if profile is None:  # only a miss pays the thread-pool hop to Postgres
            profile = await run_in_threadpool(self.load_profile, user_id)
        index = self.index_for(user_id)
        factor, strategy = (None, POPULAR) if index is None else self.user_factor(index, profile)
        # the dislike push re-scores every item: those users are scanned exactly
        ann = None if factor is None or profile.disliked else self.ann.get(index)
        if ann is not None:
            scores, catalogue, version = None, index.catalogue, index.version
        elif factor is not None:
            scores = await self.scorer.scores(index.factors, factor)
            catalogue, version = index.catalogue, index.version
        else:
            strategy, catalogue, scores = POPULAR, *self._popularity_scores()
            version = index.version if index is not None else None
        rows_of = profile.rows_for(catalogue)
        excluded = (
            np.concatenate([rows_of.seen, rows_of.hidden]) if exclude_seen else rows_of.hidden
        )
        gone = self.deleted.rows_for(catalogue)  # O(deleted items), memoised per catalogue
        if gone.size:
            excluded = np.concatenate([excluded, gone])
        if ann is not None:
            rows, best = ann_top_k(
                ann.recommend, index.factors, factor, k, excluded, filter_mask(catalogue, filters)
            )
        else:
            if profile.disliked:
                scores = _push_away(index, catalogue, scores, profile)
            rows, best = top_k(scores, k, excluded, filter_mask(catalogue, filters))
        result = Recommendation(user_id, strategy, version, catalogue, rows, round_scores(best))
        fresh = self.content.current if self.settings.fresh_share > 0 else None
        if explain or (strategy != POPULAR and fresh is not None and len(fresh.catalogue)):
            result = await run_in_threadpool(
                self._decorate, result, index, profile, k, exclude_seen, filters, explain
            )
        self.metrics.served[strategy].inc()
        if log_history:
            self.history.log(
                user_id=user_id,
                strategy=strategy,
                model_version=version,
                item_ids=result.item_ids(),
                scores=result.scores,
                request={"k": k, "exclude_seen": exclude_seen, **filters.as_dict()},
            )
        return result

    def _decorate(
        self,
        result: Recommendation,
        index: ItemIndex | None,
        profile: UserProfile,
        k: int,
        exclude_seen: bool,
        filters: ItemFilters,
        explain: bool,
    ) -> Recommendation:
        """``result`` with ``round(FRESH_SHARE * k)`` fresh items mixed in by content (ALS and
        fold-in answers, :mod:`.content`; every item then says its ``strategy``) and, with
        ``explain``, each ALS item's top past items (:mod:`.explain`; null for popular and
        content items)."""
        found = None
        if result.strategy != POPULAR and index is not None:
            found = self.content.fresh_for(
                profile,
                fresh_count(k, self.settings.fresh_share, k),
                exclude_seen=exclude_seen,
                filters=filters,
                model=(index.version, index.catalogue.row_of),
                gone=self.deleted.rows_for,
            )
        if found is None and not explain:
            return result
        catalogue, rows, scores = result.catalogue, result.rows, result.scores
        fresh = [False] * len(scores)
        if found is not None:
            catalogue, rows, scores, fresh = mixed(catalogue, rows, scores, found, k)
        extras = [{"strategy": CONTENT if f else result.strategy} if found else {} for f in fresh]
        if explain:
            own = [n for n, f in enumerate(fresh) if not f]  # the model's items, in order
            reasons = [None] * len(own)
            if result.strategy != POPULAR and index is not None:
                reasons = explain_rows(index, profile, result.rows[: len(own)])
            for extra in extras:
                extra["explanation"] = None
            for n, why in zip(own, reasons, strict=True):
                extras[n]["explanation"] = why
        return Recommendation(
            result.user_id,
            result.strategy,
            result.model_version,
            catalogue,
            rows,
            scores,
            tuple(extras),
        )

    def _known_items(self) -> tuple[str | None, dict[str, int]]:
        """The serving model's version and item rows (none published: no item is known)."""
        index = self.holder.current
        return (None, {}) if index is None else (index.version, index.catalogue.row_of)

    def _popularity_scores(self) -> tuple[Catalogue, np.ndarray]:
        table = self.popularity.current
        if table is None:
            raise ModelNotReady("no model is published and popularity is not computed yet")
        return table.catalogue, table.scores.copy()

    async def similar(self, item_id: str, *, k: int, filters: ItemFilters) -> dict[str, Any]:
        """Items closest to ``item_id`` by cosine of ALS item factors (``strategy: als``); an
        item without one (a cold item) by its MiniLM embedding (``strategy: content``)."""
        index = self.holder.current
        row = None if index is None else index.catalogue.row_of.get(item_id)
        if row is None:  # not in the model: its content neighbours (a Chroma request)
            return await run_in_threadpool(self._similar_by_content, item_id, index, k, filters)
        if row is None or item_id in self.deleted:
            raise NotFound(
                f"item {item_id!r} is not in the active model {index.version}", item_id=item_id
            )
        excluded = np.append(self.deleted.rows_for(index.catalogue), row)
        mask = filter_mask(index.catalogue, filters)
        ann = self.ann.get(index)
        if ann is not None and ann.similar is not None:
            unit = index.unit_factors
            rows, best = ann_top_k(ann.similar, unit, unit[row], k, excluded, mask)
        else:
            scores = index.unit_factors @ index.unit_factors[row]
            rows, best = top_k(scores, k, excluded, mask)
        return {
            "item_id": item_id,
            "strategy": ALS,
            "model_version": index.version,
            "items": items_json(index.catalogue, rows, round_scores(best)),
        }

    def _similar_by_content(
        self, item_id: str, index: ItemIndex | None, k: int, filters: ItemFilters
    ) -> dict[str, Any]:
        found = None if item_id in self.deleted else self.content.similar(item_id, k, filters)
        if found is None:
            index = self.require_index()  # none published: 503, the next model may know it
            raise NotFound(
                f"item {item_id!r} is neither in the active model {index.version} nor in the "
                f"product catalogue ({self.settings.products_collection!r})",
                item_id=item_id,
            )
        catalogue, rows, scores = found
        keep = ~np.isin(rows, self.deleted.rows_for(catalogue))
        return {
            "item_id": item_id,
            "strategy": CONTENT,
            "model_version": index.version if index is not None else None,
            "items": items_json(catalogue, rows[keep], round_scores(scores[keep])),
        }

    def require_index(self) -> ItemIndex:
        index = self.holder.current
        if index is None:
            raise ModelNotReady("no ALS model is published yet; similar items need one")
        return index

    # --- user caches ----------------------------------------------------------------------

    def forget_users(self, user_ids: list[str]) -> None:
        """Drop what is cached about users who have new events (:mod:`.interactions`): their
        next recommendation folds the events in, even before the next model."""
        self._written_since_load.update(user_ids)
        self.profiles.invalidate(user_ids)
        self.fold_ins.invalidate(user_ids)

    def _forget_remote(self, user_ids: list[str] | None) -> None:
        """Another replica's invalidation; None: messages may have been lost, forget every
        profile (cached fold-in factors then live out their FOLD_IN_CACHE_S)."""
        if user_ids is None:
            self.profiles.clear()
            return
        self.profiles.invalidate(user_ids, publish=False)
        self.fold_ins.invalidate(user_ids)

    # --- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Model, index, strategies and each store. ``status``: ok (everything up), degraded
        (a store down: fewer strategies), no_model (popularity only). Every strategy needs the
        user's profile from Postgres (cached for a minute), so with Postgres down only ALS
        users already cached are served. :func:`status_code` maps it to HTTP."""
        index = self.holder.current
        now = datetime.now(timezone.utc)
        redis_ok = self._ping_redis()
        postgres_ok = self._ping_postgres()
        popularity = self.popularity.current
        return {
            "status": "no_model"
            if index is None
            else ("ok" if redis_ok and postgres_ok else "degraded"),
            "model_version": index.version if index is not None else None,
            "active_version": self.holder.active_version,
            "item_count": len(index) if index is not None else 0,
            "factors": index.meta.dim if index is not None else None,
            "trained_at": index.meta.trained_at or None if index is not None else None,
            "loaded_at": index.loaded_at if index is not None else None,
            "index_age_s": round((now - index.loaded_at).total_seconds(), 3) if index else None,
            "last_check_at": self.holder.last_check_at,
            "last_error": self.holder.last_error,
            "strategies": {
                ALS: index is not None and redis_ok,
                FOLD_IN: index is not None and postgres_ok,
                POPULAR: popularity is not None and postgres_ok,
            },
            "popularity": None
            if popularity is None
            else {
                "items": len(popularity.catalogue),
                "basis": popularity.basis,
                "refreshed_at": popularity.refreshed_at,
            },
            "stores": {"redis": redis_ok, "postgres": postgres_ok},
            "experiment": self._experiment_status(),
            "history": self.history.counts(),
            "cached_profiles": len(self.profiles),
            "ann": self.ann.status(index),
            "item_index": self._item_index_status(index),
        }

    def _item_index_status(self, index: ItemIndex | None) -> dict[str, Any] | None:
        """Where the loaded version's item factors came from, and its Chroma collection's state
        (read live: it is filled after the switch); state null when Redis does not answer."""
        if index is None:
            return None
        meta = index.meta
        in_redis = meta.extra.get(model_store.ITEMS_FIELD) == model_store.ITEMS_IN_REDIS
        source = "redis" if in_redis else "chroma"
        try:
            raw = self.redis.hget(model_store.meta_key(meta.version), model_store.ITEM_INDEX_FIELD)
            state = raw.decode() if raw else model_store.INDEX_COMPLETE
        except (redis.RedisError, OSError):
            state = None
        return {"source": source, "collection": meta.collection, "state": state}

    def _experiment_status(self) -> dict[str, Any] | None:
        experiment = self.experiment
        if experiment is None:
            return None
        loaded = self.arm_b.current
        return {
            "experiment_id": experiment.experiment_id,
            "version_b": experiment.version_b,
            "share_b": experiment.share_b,
            "version_b_loaded": loaded is not None and loaded.version == experiment.version_b,
        }

    def _ping_redis(self) -> bool:
        try:
            return bool(self.redis.ping())
        except (redis.RedisError, OSError):
            return False

    def _ping_postgres(self) -> bool:
        try:
            with self.db.connect() as conn:
                conn.execute(select(1))
            return True
        except SQLAlchemyError:
            return False


def status_code(report: dict[str, Any]) -> int:
    """HTTP status of a :meth:`RecoEngine.status` report: 503 when no strategy can serve
    (nothing published and Postgres down, or no model and no popularity yet), else 200."""
    return 200 if any(report["strategies"].values()) else 503


def _push_away(
    index: ItemIndex | None, catalogue: Catalogue, scores: np.ndarray, profile: UserProfile
) -> np.ndarray:
    """``scores`` (n,) of ``catalogue`` minus ``spread * push``: an item like the user's disliked
    ones (by the ALS "anti-taste" or by category: :func:`Prod.common.feedback.dislike_push`)
    loses up to the whole score range."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return scores
    anti_scores = disliked_scores = None
    disliked = profile.rows_for(index.catalogue).disliked if index is not None else np.zeros(0)
    if disliked.size:
        anti = solve_user_factor(index, disliked, np.ones(disliked.size, dtype=np.float32))
        disliked_scores = index.factors[disliked] @ anti
        if catalogue is index.catalogue:
            anti_scores = index.factors @ anti
        else:  # popularity: its own catalogue, mapped onto the model's rows
            row_of = index.catalogue.row_of
            rows = np.fromiter((row_of.get(i, -1) for i in catalogue.item_ids), np.int64)
            anti_scores = np.where(rows >= 0, index.factors[rows] @ anti, np.float32(0.0))
    push = dislike_push(
        n_disliked=len(profile.disliked),
        n_liked=profile.n_liked,
        anti_scores=anti_scores,
        disliked_scores=disliked_scores,
        same_category=_category_share(catalogue, index, profile.disliked),
    )
    if push is None:
        return scores
    spread = float(finite.max() - finite.min())
    return (scores - spread * push).astype(np.float32)


def _category_share(
    catalogue: Catalogue, index: ItemIndex | None, disliked: frozenset[str]
) -> np.ndarray:
    """(n,) per row of ``catalogue``: the share of the disliked items in its category."""
    names = []
    for item_id in disliked:
        for source in (catalogue, index.catalogue if index is not None else None):
            row = source.row_of.get(item_id) if source is not None else None
            if row is not None:
                names.append(source.categories[row])
                break
        else:
            names.append(None)
    share_by_code = category_share(list(catalogue.category_codes), names)
    return np.append(share_by_code, 0.0)[catalogue.category_code]  # code -1 (unknown) -> 0
