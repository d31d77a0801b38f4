"""Micro-batched scoring: the mat-vecs of requests that reach scoring in the same event-loop turn
are computed as one matrix product.

A single (n_items x dim) @ (dim,) product is memory-bound: it streams the whole item matrix (5 MB
at 20,000 x 64 float32) for 1.3 MFLOP. Under concurrent load several requests are ready in the same
loop turn; ``item_factors @ user_factors.T`` reads the matrix once for all of them (measured on
this machine, CPU per user at 20,000 items: 0.25 ms alone, 0.10 ms in a batch of 8, 0.05 ms in 32;
at 100,000 items: 2.3, 0.6, 0.3 ms). A lone request waits one loop turn, nothing more: no timer.
"""

from __future__ import annotations

import asyncio

import numpy as np

MAX_BATCH = 64  # more users than this per product buys little and delays the first of them


class BatchScorer:
    """Scores ``item_factors @ factor`` for requests on one event loop, batched per loop turn.

    Only the event loop's thread may call :meth:`scores`; requests of different model versions
    (a hot swap mid-turn) are batched per item matrix.
    """

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self._max_batch = max_batch
        self._pending: list[tuple[np.ndarray, np.ndarray, asyncio.Future]] = []

    async def scores(self, item_factors: np.ndarray, factor: np.ndarray) -> np.ndarray:
        """(n_items,) float32 scores of ``factor`` (dim,) against ``item_factors`` (n_items, dim).

        The result may be a strided view into the batch's (n_items, b) product; it is the caller's
        to modify.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._run)
        self._pending.append((item_factors, factor, future))
        return await future

    def _run(self) -> None:
        pending, self._pending = self._pending, []
        groups: dict[int, list[tuple[np.ndarray, np.ndarray, asyncio.Future]]] = {}
        for entry in pending:
            groups.setdefault(id(entry[0]), []).append(entry)
        for group in groups.values():
            for start in range(0, len(group), self._max_batch):
                _score_batch(group[start : start + self._max_batch])


def _score_batch(batch: list[tuple[np.ndarray, np.ndarray, asyncio.Future]]) -> None:
    item_factors = batch[0][0]
    try:
        if len(batch) == 1:
            columns = [item_factors @ batch[0][1]]
        else:
            users = np.stack([factor for _, factor, _ in batch])  # (b, dim)
            product = item_factors @ users.T  # (n_items, b): the fastest layout measured
            columns = [product[:, j] for j in range(len(batch))]
    except Exception as exc:  # hand the failure to every waiting request
        for _, _, future in batch:
            if not future.done():
                future.set_exception(exc)
        return
    for (_, _, future), column in zip(batch, columns, strict=True):
        if not future.done():  # a cancelled request (client gone) is skipped
            future.set_result(column)
