"""Micro-batched scoring returns each request's own mat-vec, batched or not."""

from __future__ import annotations

import asyncio

import numpy as np

from Prod.als_reco_engine.batching import BatchScorer


def test_concurrent_requests_get_their_own_scores(rng):
    items_a = rng.normal(size=(300, 8)).astype(np.float32)
    items_b = rng.normal(size=(200, 8)).astype(np.float32)  # a second version mid-turn
    users = rng.normal(size=(7, 8)).astype(np.float32)
    scorer = BatchScorer(max_batch=3)  # 5 users of version a: batches of 3 + 2

    async def run():
        calls = [scorer.scores(items_a, u) for u in users[:5]]
        calls += [scorer.scores(items_b, u) for u in users[5:]]
        return await asyncio.gather(*calls)

    results = asyncio.run(run())
    for got, user, items in zip(results, users, [items_a] * 5 + [items_b] * 2, strict=True):
        np.testing.assert_allclose(got, items @ user, rtol=1e-5, atol=1e-5)
        assert got.dtype == np.float32


def test_lone_request_and_failures():
    scorer = BatchScorer()
    items = np.eye(4, dtype=np.float32)

    async def run():
        lone = await scorer.scores(items, np.arange(4, dtype=np.float32))
        bad = await asyncio.gather(
            scorer.scores(items, np.ones(3, np.float32)),
            scorer.scores(items, np.ones(4, np.float32)),
            return_exceptions=True,
        )
        return lone, bad

    lone, bad = asyncio.run(run())
    assert lone.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert all(isinstance(r, ValueError) for r in bad)  # the batch's error reaches both
