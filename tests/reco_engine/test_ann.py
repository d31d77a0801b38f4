"""Approximate top-k (Prod/als_reco_engine/ann.py): recall against the exact scan on a synthetic
clustered index, exclusions and filters exact, the selective-filter fallback, the background
build, and the engine serving from it after a version switch (ANN_MIN_ITEMS forced low)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from Prod.als_reco_engine import ann as ann_module
from Prod.als_reco_engine.ann import AnnIndex, AnnIndexes, ann_top_k
from Prod.als_reco_engine.index import build_index, top_k
from Prod.als_reco_engine.main import create_app
from Prod.common.model_store import ModelMeta
from tests.reco_engine.conftest import wait_for
from tests.utils.publish import train_and_publish

N_ITEMS, DIM, K = 20_000, 32, 10


@pytest.fixture(scope="module")
def clustered():
    """Items and users around 20 shared centres (like ``reco bench serving``'s model)."""
    rng = np.random.default_rng(7)
    centres = rng.normal(0, 1, (20, DIM)).astype(np.float32)
    items = centres[rng.integers(0, 20, N_ITEMS)] + rng.normal(0, 0.5, (N_ITEMS, DIM))
    users = centres[rng.integers(0, 20, 100)] + rng.normal(0, 0.5, (100, DIM))
    return items.astype(np.float32), users.astype(np.float32)


@pytest.fixture(scope="module")
def ann(clustered):
    return AnnIndex.build(clustered[0])


def _exact(items, user, excluded, mask=None):
    return top_k(items @ user, K, excluded, mask)


def test_recall_against_the_exact_top_k_with_seen_items_removed(clustered, ann):
    items, users = clustered
    rng = np.random.default_rng(1)
    found = 0
    for user in users:
        seen = rng.choice(N_ITEMS, 30, replace=False)
        seen[:10] = _exact(items, user, np.zeros(0, np.int64))[0]  # the best ones were seen
        rows, scores = ann_top_k(ann, items, user, K, seen, None)
        assert len(rows) == K and not set(rows.tolist()) & set(seen.tolist())
        np.testing.assert_allclose(scores, items[rows] @ user, rtol=1e-6)  # exact scores
        assert list(scores) == sorted(scores, reverse=True)
        found += len(set(rows.tolist()) & set(_exact(items, user, seen)[0].tolist()))
    assert found / (K * len(users)) >= 0.98


def test_filters_are_exact_and_a_broad_filter_keeps_the_recall(clustered, ann):
    items, users = clustered
    mask = np.random.default_rng(2).random(N_ITEMS) < 0.3  # keeps 30%: over-fetched search
    found = 0
    for user in users[:50]:
        rows, _ = ann_top_k(ann, items, user, K, np.zeros(0, np.int64), mask)
        assert len(rows) == K and mask[rows].all()
        exact = _exact(items, user, np.zeros(0, np.int64), mask)[0]
        found += len(set(rows.tolist()) & set(exact.tolist()))
    assert found / (K * 50) >= 0.98


class _Counting(AnnIndex):
    """The index, counting its searches (to see which path answered)."""

    searches = 0

    def candidates(self, query, n):
        type(self).searches += 1
        return super().candidates(query, n)


def test_a_selective_filter_is_answered_by_the_exact_scan_of_what_it_keeps(clustered, ann):
    items, users = clustered
    counting = _Counting(ann.index, ann.nprobe, ann.build_s, ann.nbytes)
    mask = np.zeros(N_ITEMS, dtype=bool)
    mask[np.random.default_rng(3).choice(N_ITEMS, 150, replace=False)] = True  # 0.75%
    seen = np.flatnonzero(mask)[:5]
    for user in users[:20]:
        rows, scores = ann_top_k(counting, items, user, K, seen, mask)
        expected_rows, expected_scores = _exact(items, user, seen, mask)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    assert _Counting.searches == 0
    # a filter keeping 5 items, all seen: nothing, like the exact scan
    only_seen = np.zeros(N_ITEMS, dtype=bool)
    only_seen[seen] = True
    assert ann_top_k(counting, items, users[0], K, seen, only_seen)[0].size == 0


def _item_index(n_items: int, dim: int = 16):
    rng = np.random.default_rng(n_items)
    meta = ModelMeta(
        version=f"ann-test-{n_items}",
        dim=dim,
        n_users=0,
        n_items=n_items,
        collection="unused",
        alpha=1.0,
        regularization=0.1,
        trained_at="",
    )
    factors = rng.normal(size=(n_items, dim)).astype(np.float32)
    return build_index(meta, [f"i{j}" for j in range(n_items)], factors, [{}] * n_items)


def test_the_build_runs_in_the_background_and_answers_only_for_its_own_index(monkeypatch):
    release = threading.Event()
    original = AnnIndex.build.__func__

    def held_build(cls, vectors, seed=0):
        release.wait(30)
        return original(cls, vectors, seed)

    monkeypatch.setattr(ann_module.AnnIndex, "build", classmethod(held_build))
    indexes = AnnIndexes(min_items=1000)
    small, large, newer = _item_index(500), _item_index(3000), _item_index(3001)
    try:
        started = time.perf_counter()
        indexes.switch(large)
        assert time.perf_counter() - started < 0.5  # the switch never waits for the build
        assert indexes.get(large) is None and indexes.status(large)["state"] == "building"
        release.set()
        wait_for(lambda: indexes.status(large)["state"] == "ready")
        pair = indexes.get(large)
        assert pair.recommend.index.ntotal == 3000 and pair.similar.index.ntotal == 3000
        assert indexes.get(newer) is None  # another version's index never answers
        indexes.switch(newer)
        wait_for(lambda: indexes.get(newer) is not None and indexes.get(newer).similar)
        assert indexes.get(large) is None
        indexes.switch(small)  # below the threshold: exact, nothing built
        assert indexes.get(small) is None and indexes.status(small)["state"] == "off"
        assert AnnIndexes(min_items=0).status(large)["state"] == "off"  # 0 turns ANN off
    finally:
        release.set()
        indexes.stop()


def _answers(client, dataset, **params):
    return [
        client.get(f"/api/v1/recommend/{user}", params={"k": 8, **params}).json()["items"]
        for user in dataset.user_ids[:10]
    ]


def test_the_engine_serves_exact_while_building_and_ann_after_the_switch(
    settings, dataset, published, monkeypatch
):
    # fresh-item mixing off in both: its list refreshes in the background, at a different moment
    # in each app, and this test compares the top-k machinery only
    settings = settings.model_copy(update={"fresh_share": 0.0})
    exact_app = create_app(settings.model_copy(update={"ann_min_items": 0}), poll_interval_s=0.2)
    release = threading.Event()
    original = AnnIndex.build.__func__
    builds: list[int] = []

    def held_build(cls, vectors, seed=0):
        release.wait(60)
        builds.append(len(vectors))
        return original(cls, vectors, seed)

    monkeypatch.setattr(ann_module.AnnIndex, "build", classmethod(held_build))
    ann_settings = settings.model_copy(update={"ann_min_items": 1})
    app = create_app(ann_settings, poll_interval_s=0.2, popularity_interval_s=0.5)
    try:
        with TestClient(exact_app) as exact, TestClient(app) as client:
            engine = app.state.engine
            first = engine.holder.current
            # the build is held: requests are answered (exactly) meanwhile
            assert client.get("/api/v1/status").json()["ann"]["state"] == "building"
            assert _answers(client, dataset) == _answers(exact, dataset)
            release.set()
            wait_for(lambda: client.get("/api/v1/status").json()["ann"]["state"] == "ready")
            status = client.get("/api/v1/status").json()["ann"]
            assert status["recommend"]["bytes"] > 0 and status["similar"]["build_s"] >= 0
            assert engine.ann.get(first) is not None
            filters = {"category": "garden", "max_price": 30}
            for params in ({}, filters, {"exclude_seen": "false"}):
                assert _answers(client, dataset, **params) == _answers(exact, dataset, **params)
            item = dataset.item_ids[0]
            assert (
                client.get(f"/api/v1/similar/{item}", params={"k": 5}).json()
                == exact.get(f"/api/v1/similar/{item}", params={"k": 5}).json()
            )
            # a new version: the engine switches at once and builds its ANN index behind it
            version = train_and_publish(settings)
            wait_for(lambda: engine.holder.current.version == version)
            wait_for(lambda: engine.ann.get(engine.holder.current) is not None)
            assert engine.ann.get(first) is None
            wait_for(lambda: exact_app.state.engine.holder.current.version == version)
            assert _answers(client, dataset) == _answers(exact, dataset)
            assert builds.count(len(first)) >= 2  # recommend + similar, each version
    finally:
        release.set()
