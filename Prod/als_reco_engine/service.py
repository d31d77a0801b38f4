"""The serving engine: one object per app holding the hot-swapped item index, the caches and the
background workers, plus the service functions the routes call.

Hot path of ``recommend`` (an ALS user with a cached profile): one Redis HGET for the user factor,
one (n_items x dim) float32 mat-vec (batched with the other requests of the same event-loop turn,
:mod:`.batching`), an argpartition, no Postgres; the response JSON is joined from bytes
precomputed per item.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import redis
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from config import Settings
from Prod.als_reco_engine.batching import BatchScorer
from Prod.als_reco_engine.foldin import FoldInCache, solve_user_factor
from Prod.als_reco_engine.guard import CircuitBreaker, StoreUnavailable
from Prod.als_reco_engine.history import HistoryWriter, count_history, read_history
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
from Prod.als_reco_engine.profiles import ProfileCache, UserProfile
from Prod.common import model_store
from Prod.common.data.canonical import DEFAULT_WEIGHTS, RATING_EVENT
from Prod.common.db import get_engine, postgres_errors
from Prod.common.errors import InfraError, InvalidInput, ModelNotReady, NotFound
from Prod.common.feedback import category_share, dislike_push
from Prod.common.logs import get_logger
from Prod.common.models import Interaction, Item, RecommendationListItem, SuppressedItem, User
from Prod.common.stores import chroma_for

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

    def item_ids(self) -> list[str]:
        item_ids = self.catalogue.item_ids
        return [item_ids[row] for row in self.rows.tolist()]

    def as_dict(self) -> dict[str, Any]:
        """The response document (``RecommendationOut``) as plain Python values."""
        return {**self._head(), "items": describe_items(self.catalogue, self.rows, self.scores)}

    def to_json(self) -> bytes:
        """The response document encoded directly (item JSON precomputed per catalogue row)."""
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
        self.redis = redis.Redis.from_url(
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
        negative_below = settings.negative_rating_below
        self.profiles = ProfileCache(self.db, ttl_s=profile_ttl_s, negative_below=negative_below)
        self.fold_ins = FoldInCache(settings.fold_in_cache_s)
        self.popularity = PopularityRefresher(
            self.db, interval_s=popularity_interval_s, negative_below=negative_below
        )
        self.history = HistoryWriter(self.db, max_buffered=settings.history_max_buffered)
        self.scorer = BatchScorer()
        self.metrics = RecoMetrics((ALS, FOLD_IN, POPULAR))
        self._written_since_load: set[str] = set()  # users with events newer than the index
        self.started_at = datetime.now(timezone.utc)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load what is published now (so the first request is served), then start workers."""
        self.holder.refresh()
        self.popularity.refresh()
        self.holder.start()
        self.popularity.start()
        self.history.start()

    def stop(self) -> None:
        self.holder.stop()
        self.popularity.stop()
        self.history.stop()
        if self._factor_redis is not None:
            self._factor_redis.close()

    # --- loading the index ----------------------------------------------------------------

    def _read_active_pointer(self) -> str | None:
        return model_store.active_version(self.redis)

    def _load_index(self, version: str) -> ItemIndex:
        meta = model_store.read_meta(self.redis, version)
        if meta is None:
            raise ModelNotReady(f"model {version} has no meta hash")
        started = time.perf_counter()
        item_ids, factors, metadatas = model_store.load_item_factors(
            chroma_for(self.settings), meta
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
                        text("select data_watermark from model_version where version_id = :v"),
                        {"v": meta.version},
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
            self._factor_redis = redis.Redis.from_url(
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
    ) -> Recommendation:
        """Top-k for a user with the best strategy available (als > fold_in > popular).

        Suppressed and disliked items are never returned (seen ones unless ``exclude_seen`` is
        off), and items like the disliked ones are pushed down (:meth:`_push_away`).
        """
        profile = self.profiles.cached(user_id)
        if profile is None:  # only a miss pays the thread-pool hop to Postgres
            profile = await run_in_threadpool(self.load_profile, user_id)
        index = self.holder.current
        factor, strategy = (None, POPULAR) if index is None else self.user_factor(index, profile)
        if factor is not None:
            scores = await self.scorer.scores(index.factors, factor)
            catalogue, version = index.catalogue, index.version
        else:
            strategy, catalogue, scores = POPULAR, *self._popularity_scores()
            version = index.version if index is not None else None
        rows_of = profile.rows_for(catalogue)
        excluded = (
            np.concatenate([rows_of.seen, rows_of.hidden]) if exclude_seen else rows_of.hidden
        )
        if profile.disliked:
            scores = _push_away(index, catalogue, scores, profile)
        rows, best = top_k(scores, k, excluded, filter_mask(catalogue, filters))
        result = Recommendation(user_id, strategy, version, catalogue, rows, round_scores(best))
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

    def _popularity_scores(self) -> tuple[Catalogue, np.ndarray]:
        table = self.popularity.current
        if table is None:
            raise ModelNotReady("no model is published and popularity is not computed yet")
        return table.catalogue, table.scores.copy()

    def similar(self, item_id: str, *, k: int, filters: ItemFilters) -> dict[str, Any]:
        """Items closest to ``item_id`` by cosine of ALS item factors."""
        index = self.require_index()
        row = index.catalogue.row_of.get(item_id)
        if row is None:
            raise NotFound(
                f"item {item_id!r} is not in the active model {index.version}", item_id=item_id
            )
        scores = index.unit_factors @ index.unit_factors[row]
        rows, best = top_k(scores, k, np.array([row]), filter_mask(index.catalogue, filters))
        return {
            "item_id": item_id,
            "model_version": index.version,
            "items": items_json(index.catalogue, rows, round_scores(best)),
        }

    def require_index(self) -> ItemIndex:
        index = self.holder.current
        if index is None:
            raise ModelNotReady("no ALS model is published yet; similar items need one")
        return index

    # --- interactions ---------------------------------------------------------------------

    def record_interactions(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Insert events in one transaction (all or nothing); new users are created.

        Returns counts; unknown items raise InvalidInput naming them. Caches of the users are
        dropped after the commit, so their next recommendation folds the new events in.
        """
        item_ids = sorted({e["item_id"] for e in events})
        user_ids = sorted({e["user_id"] for e in events})
        rows = [_interaction_row(e) for e in events]
        try:
            with self.db.begin() as conn:
                known = set(conn.scalars(select(Item.item_id).where(Item.item_id.in_(item_ids))))
                unknown = [i for i in item_ids if i not in known]
                if unknown:
                    raise InvalidInput(
                        f"unknown item(s): {', '.join(unknown[:20])}", unknown_items=unknown
                    )
                created = conn.scalars(
                    pg_insert(User)
                    .values([{"user_id": u} for u in user_ids])
                    .on_conflict_do_nothing()
                    .returning(User.user_id)
                ).all()
                inserted = conn.scalars(
                    pg_insert(Interaction)
                    .values(rows)
                    .on_conflict_do_nothing(constraint="uq_interaction_event")
                    .returning(Interaction.id)
                ).all()
        except SQLAlchemyError as exc:
            raise InfraError(
                "PostgreSQL is unavailable (the interaction database); try again shortly",
                store="postgres",
            ) from exc
        self._forget_users(user_ids)
        return {
            "accepted": len(inserted),
            "duplicates": len(rows) - len(inserted),
            "created_users": sorted(created),
            "user_ids": user_ids,
        }

    def _forget_users(self, user_ids: list[str]) -> None:
        self._written_since_load.update(user_ids)
        self.profiles.invalidate(user_ids)
        self.fold_ins.invalidate(user_ids)

    # --- history --------------------------------------------------------------------------

    def history_page(self, *, user_id: str | None, limit: int, offset: int) -> dict[str, Any]:
        self.history.flush(timeout_s=2.0)  # read-your-own-responses within this process
        try:
            rows, has_more = read_history(self.db, user_id=user_id, limit=limit, offset=offset)
            total = count_history(self.db, user_id=user_id)
        except SQLAlchemyError as exc:
            raise InfraError(
                "PostgreSQL is unavailable (the history); try again shortly", store="postgres"
            ) from exc
        entries = [
            {
                "id": r["id"],
                "user_id": r["user_id"],
                "served_at": r["served_at"],
                "strategy": r["strategy"],
                "model_version": r["model_version"],
                "items": [
                    {"item_id": i, "score": s}
                    for i, s in zip(r["item_ids"], r["scores"], strict=True)
                ],
                "request": r["request"],
            }
            for r in rows
        ]
        return {
            "user_id": user_id,
            "limit": limit,
            "offset": offset,
            "total": total,
            "has_more": has_more,
            "entries": entries,
        }

    # --- stored lists ---------------------------------------------------------------------

    async def refresh_list(self, user_id: str, *, k: int) -> dict[str, Any]:
        """Replace the user's stored list with a fresh top-k (seen and suppressed removed)."""
        result = await self.recommend(
            user_id, k=k, exclude_seen=True, filters=ItemFilters(), log_history=False
        )
        scored = list(zip(result.item_ids(), result.scores, strict=True))
        await run_in_threadpool(self._store_list, user_id, scored, result.model_version)
        return await run_in_threadpool(self.read_list, user_id, result.strategy)

    async def replace_list(self, user_id: str, item_ids: list[str]) -> dict[str, Any]:
        """Store the given products as the user's list, re-scored by the model, best first."""
        item_ids = list(dict.fromkeys(item_ids))
        await run_in_threadpool(self._require_items, item_ids)
        profile = await self.profile(user_id)
        scored, strategy, version = self._score_items(profile, item_ids)
        scored.sort(key=lambda pair: -pair[1])  # stable: unscored (-inf) keep the given order
        skipped = await run_in_threadpool(
            self._store_list, user_id, scored, version, skip_suppressed=True
        )
        result = await run_in_threadpool(self.read_list, user_id, strategy, missing_ok=True)
        return {**result, "skipped_suppressed": skipped}

    def delete_list(self, user_id: str) -> None:
        """Delete the user's whole stored list (NotFound when there is none). Suppressions stay:
        they are the customer's "never again", not part of the list."""
        table = RecommendationListItem.__table__
        with postgres_errors("stored lists"), self.db.begin() as conn:
            deleted = conn.execute(table.delete().where(table.c.user_id == user_id)).rowcount
        if not deleted:
            raise NotFound(f"no stored recommendation list for user {user_id!r}", user_id=user_id)

    def restore_suppressed_items(self, user_id: str, item_ids: list[str]) -> dict[str, Any]:
        """Undo suppressions: the products may be recommended (and stored in lists) again.
        NotFound when none of them is suppressed for the user."""
        item_ids = list(dict.fromkeys(item_ids))
        table = SuppressedItem.__table__
        with postgres_errors("stored lists"), self.db.begin() as conn:
            restored = conn.scalars(
                table.delete()
                .where(table.c.user_id == user_id, table.c.item_id.in_(item_ids))
                .returning(table.c.item_id)
            ).all()
        if not restored:
            raise NotFound(
                f"none of the given products is suppressed for user {user_id!r}",
                user_id=user_id,
                item_ids=item_ids,
            )
        self.profiles.invalidate([user_id])
        restored_set = set(restored)
        return {
            "user_id": user_id,
            "restored": sorted(restored_set),
            "not_suppressed": [i for i in item_ids if i not in restored_set],
        }

    def remove_list_items(self, user_id: str, item_ids: list[str]) -> dict[str, Any]:
        """Delete products from the list and suppress them from future recommendations."""
        item_ids = list(dict.fromkeys(item_ids))
        self._require_items(item_ids)
        table = RecommendationListItem.__table__
        with postgres_errors("stored lists"), self.db.begin() as conn:
            removed = conn.scalars(
                table.delete()
                .where(table.c.user_id == user_id, table.c.item_id.in_(item_ids))
                .returning(table.c.item_id)
            ).all()
            conn.execute(
                pg_insert(SuppressedItem)
                .values([{"user_id": user_id, "item_id": i} for i in item_ids])
                .on_conflict_do_nothing()
            )
            _renumber(conn, user_id)
        self.profiles.invalidate([user_id])
        result = self.read_list(user_id, None, missing_ok=True)
        return {**result, "removed": sorted(removed), "suppressed": item_ids}

    def read_list(
        self, user_id: str, strategy: str | None = None, missing_ok: bool = False
    ) -> dict[str, Any]:
        table = RecommendationListItem.__table__
        query = (
            select(
                table.c.item_id,
                table.c.score,
                table.c.position,
                table.c.model_version,
                table.c.updated_at,
                Item.title,
                Item.brand,
                Item.category,
                Item.price,
                Item.avg_rating,
            )
            .join(Item, Item.item_id == table.c.item_id)
            .where(table.c.user_id == user_id)
            .order_by(table.c.position)
        )
        with postgres_errors("stored lists"), self.db.connect() as conn:
            rows = conn.execute(query).mappings().all()
        if not rows and not missing_ok:
            raise NotFound(f"no stored recommendation list for user {user_id!r}", user_id=user_id)
        items = [
            {
                "item_id": r["item_id"],
                "score": r["score"] if math.isfinite(r["score"]) else None,
                "position": r["position"],
                "title": r["title"],
                "brand": r["brand"],
                "category": r["category"],
                "price": r["price"],
                "avg_rating": r["avg_rating"],
            }
            for r in rows
        ]
        return {
            "user_id": user_id,
            "strategy": strategy,
            "model_version": rows[0]["model_version"] if rows else None,
            "updated_at": max((r["updated_at"] for r in rows), default=None),
            "items": items,
        }

    def _score_items(
        self, profile: UserProfile, item_ids: list[str]
    ) -> tuple[list[tuple[str, float]], str, str | None]:
        index = self.holder.current
        factor, strategy = (None, POPULAR) if index is None else self.user_factor(index, profile)
        if factor is not None:
            catalogue, lookup = index.catalogue, None
        else:
            table = self.popularity.current
            catalogue = table.catalogue if table is not None else None
            lookup = table.scores if table is not None else None
        scored = []
        for item_id in item_ids:
            row = catalogue.row_of.get(item_id) if catalogue is not None else None
            if row is None:
                score = -math.inf if factor is not None else 0.0
            elif factor is not None:
                score = float(index.factors[row] @ factor)
            else:
                score = float(lookup[row])
            scored.append((item_id, score))
        return scored, strategy, index.version if index is not None else None

    def _store_list(
        self,
        user_id: str,
        scored: list[tuple[str, float]],
        model_version: str | None,
        *,
        skip_suppressed: bool = False,
    ) -> list[str]:
        """Replace the user's list with ``scored`` (best first). With ``skip_suppressed``, the
        products the user suppressed are left out (read in the same transaction); returns them."""
        table = RecommendationListItem.__table__
        now = datetime.now(timezone.utc)
        skipped: list[str] = []
        with postgres_errors("stored lists"), self.db.begin() as conn:
            if skip_suppressed and scored:
                suppressed = set(
                    conn.scalars(
                        select(SuppressedItem.item_id).where(
                            SuppressedItem.user_id == user_id,
                            SuppressedItem.item_id.in_([i for i, _ in scored]),
                        )
                    )
                )
                skipped = [i for i, _ in scored if i in suppressed]
                scored = [(i, score) for i, score in scored if i not in suppressed]
            conn.execute(table.delete().where(table.c.user_id == user_id))
            if scored:
                conn.execute(
                    table.insert(),
                    [
                        {
                            "user_id": user_id,
                            "item_id": item_id,
                            "score": score,
                            "position": pos,
                            "model_version": model_version,
                            "updated_at": now,
                        }
                        for pos, (item_id, score) in enumerate(scored, start=1)
                    ],
                )
        return skipped

    def _require_items(self, item_ids: list[str]) -> None:
        with postgres_errors("the item catalogue"), self.db.connect() as conn:
            known = set(conn.scalars(select(Item.item_id).where(Item.item_id.in_(item_ids))))
        unknown = [i for i in item_ids if i not in known]
        if unknown:
            raise InvalidInput(f"unknown item(s): {', '.join(unknown[:20])}", unknown_items=unknown)

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
            "history": self.history.counts(),
            "cached_profiles": len(self.profiles),
        }

    def _ping_redis(self) -> bool:
        try:
            return bool(self.redis.ping())
        except (redis.RedisError, OSError):
            return False

    def _ping_postgres(self) -> bool:
        try:
            with self.db.connect() as conn:
                conn.execute(text("select 1"))
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


def _interaction_row(event: dict[str, Any]) -> dict[str, Any]:
    weight = event.get("weight")
    if weight is None:
        kind = event["event"]
        weight = event["rating"] if kind == RATING_EVENT else DEFAULT_WEIGHTS[kind]
    occurred_at = event.get("timestamp") or datetime.now(timezone.utc)
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=timezone.utc)
    return {
        "user_id": event["user_id"],
        "item_id": event["item_id"],
        "event": event["event"],
        "rating": event.get("rating"),
        "weight": float(weight),
        "occurred_at": occurred_at,
    }


def _renumber(conn, user_id: str) -> None:
    """Positions 1..n again after products were removed from a list."""
    conn.execute(
        text(
            "update recommendation_list_item r set position = s.pos from ("
            "select item_id, row_number() over (order by position) as pos "
            "from recommendation_list_item where user_id = :u) s "
            "where r.user_id = :u and r.item_id = s.item_id"
        ),
        {"u": user_id},
    )
