"""How the ALS half sweeps of :mod:`Prod.common.als` run on CPU cores: no math here.

Rows of eq. 4 are independent, so a half sweep cuts its rows into contiguous groups of about
equal work, one per thread (like ``implicit``'s OpenMP loop over users); each thread runs its
group's whole CG with one intra-op torch thread. Intra-op parallelism would synchronise the
threads after each of the ~20 ops of a CG step, which costs more than the ops on small data.

Large fits also *stream*: a group copies, once per half sweep, the other side's factor row of
each of its non-zeros in non-zero order, so the CG's sparse products read memory front to back
instead of at random (see :func:`should_stream`). Streamed groups are blocks of at most ~32k
non-zeros that the threads take in turn, so each block's copy stays in cache through its CG.

With the fused kernel (:mod:`Prod.common.als_fused`, the default on CPU) a group is only a row
range: the kernel reads the side's CSR in place, and rows are cut into several groups per thread
so that a thread that finishes early takes the next one.

On a GPU there is one group and no pool.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

from Prod.common.als_fused import FusedRows

__all__ = [
    "RowGroup",
    "RowRange",
    "SweepPlan",
    "all_finite",
    "default_num_threads",
    "in_pool",
    "run_groups",
    "should_stream",
    "task_pool",
]

_MIN_NNZ_PER_THREAD = 32_768  # below this, another thread costs more than it gives
# stream once the other side's factors outgrow the CPU caches: on 5.2M non-zeros the two sparse
# products of a CG step took 59 ns per non-zero on the streamed copy against 109 ns reading rows
_STREAM_MIN_BYTES = 16 * 2**20
# non-zeros of a streamed block (an 8 MB copy at k=64): at 10M, 12% less CPU than 64k blocks; 8k
# blocks (L2-sized) lost more to the ~60 torch ops of each block's CG (~4 us each) than they gained
_BLOCK_NNZ = 32_768
_ROW_NNZ = 4  # a row's own CG work (k x k product, vector ops) costs about as much as 4 non-zeros
# in the fused kernel a row's k x k products cost ~15 non-zeros (k=64: 250 ns against 17 ns)
_FUSED_ROW_NNZ = 15
_FUSED_GROUPS_PER_THREAD = 8  # finer cuts balance rows of very different lengths between threads
_thread_state = threading.local()  # per worker thread: the reusable gather buffer


def should_stream(n_other: int, factors: int, device: torch.device) -> bool:
    """Whether half sweeps against ``n_other`` factor rows of size ``factors`` should stream."""
    return device.type == "cpu" and n_other * factors * 4 >= _STREAM_MIN_BYTES


def _gather_buffer(rows: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """A (rows, k) scratch tensor owned by the calling thread, grown as needed, never shrunk."""
    buffer = getattr(_thread_state, "buffer", None)
    if buffer is None or buffer.numel() < rows * k or buffer.dtype != like.dtype:
        buffer = torch.empty(rows * k, dtype=like.dtype, device=like.device)
        _thread_state.buffer = buffer
    return buffer[: rows * k].view(rows, k)


class RowGroup:
    """Rows ``[start, stop)`` of a half sweep, with what the solver reads and rewrites for them.

    ``cm1_values`` (nnz,) are ``c_ui - 1`` and ``confidence`` ``c_ui`` at the group's non-zeros;
    ``reg`` (b, 1) is ``lambda_u``, and ``uniform_reg`` that one float when all rows share it.
    ``work`` is a CSR with the group's row pattern and int32 indices (what MKL's sparse kernels
    take, so nothing is converted per call) whose values the solver rewrites on every CG step.
    Its columns index :meth:`source` of the other side's factors: those factors (b, m), or, when
    ``streamed``, their row of every non-zero in non-zero order (b, nnz). Built once per fit, so
    no CG step allocates nnz-sized memory.
    """

    def __init__(
        self, cm1: torch.Tensor, reg: torch.Tensor, start: int, stop: int, streamed: bool = False
    ) -> None:
        crow = cm1.crow_indices()
        lo, hi = int(crow[start]), int(crow[stop])
        self.start, self.stop, self.nnz = start, stop, hi - lo
        self.cm1_values = cm1.values()[lo:hi].contiguous()
        self.confidence = self.cm1_values + 1.0
        group_crow = (crow[start : stop + 1] - lo).to(torch.int32)
        columns = cm1.col_indices()[lo:hi]
        if streamed:
            self.gather_index: torch.Tensor | None = columns.to(torch.int64)
            cols = torch.arange(self.nnz, dtype=torch.int32, device=crow.device)
            shape = (stop - start, self.nnz)
        else:
            self.gather_index = None
            cols, shape = columns.to(torch.int32), (stop - start, cm1.shape[1])
        # zeros, not empty: sampled_addmm computes beta * input even for beta = 0 (NaN * 0 = NaN)
        self.work = torch.sparse_csr_tensor(
            group_crow, cols, torch.zeros_like(self.cm1_values), shape, check_invariants=False
        )
        group_reg = reg[start:stop]
        uniform = group_reg.numel() > 0 and bool((group_reg == group_reg[0]).all())
        self.uniform_reg = float(group_reg[0]) if uniform else None
        self.reg = group_reg.unsqueeze(1)

    def source(self, other: torch.Tensor) -> torch.Tensor:
        """What ``work`` indexes: ``other`` (m, k), or its row of every non-zero (nnz, k)."""
        if self.gather_index is None:
            return other
        out = _gather_buffer(self.gather_index.numel(), other.shape[1], other)
        return torch.index_select(other, 0, self.gather_index, out=out)


class RowRange:
    """Rows ``[start, stop)`` of a half sweep for the fused kernel, which reads the CSR in place."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop


class SweepPlan:
    """One side's half sweep cut into row groups; built once per fit from the CSR ``c_ui - 1``.

    ``cm1``: CSR (n, m); ``reg``: (n,) ``lambda_u``. The rows are cut into one group of about
    equal work (a row counts as ``_ROW_NNZ`` non-zeros) per thread; ``num_threads`` is lowered to
    one thread per ``min_nnz_per_thread`` non-zeros, so small fits do not pay for threads they
    cannot use. ``streamed`` groups (see :func:`should_stream`) are also cut to at most
    ~``block_nnz`` non-zeros each. ``fused``: the groups are :class:`RowRange` s for
    :mod:`Prod.common.als_fused`, which reads ``rows`` (the whole side, in place); else
    :class:`RowGroup` s for the batched kernel.
    """

    def __init__(
        self,
        cm1: torch.Tensor,
        reg: torch.Tensor,
        num_threads: int = 1,
        min_nnz_per_thread: int = _MIN_NNZ_PER_THREAD,
        *,
        streamed: bool = False,
        block_nnz: int = _BLOCK_NNZ,
        pool: ThreadPoolExecutor | None = None,
        fused: bool = False,
    ) -> None:
        nnz = int(cm1._nnz())
        self.num_threads = max(1, min(num_threads, nnz // max(1, min_nnz_per_thread)))
        self.fused = fused
        crow = cm1.crow_indices().cpu()
        row_nnz = _FUSED_ROW_NNZ if fused else _ROW_NNZ if cm1.device.type == "cpu" else 0
        cost = crow + row_nnz * torch.arange(crow.numel(), dtype=crow.dtype)
        n_groups = self.num_threads
        if fused:
            n_groups = self.num_threads * _FUSED_GROUPS_PER_THREAD
        elif streamed:
            n_groups = max(n_groups, -(-int(cost[-1]) // max(1, block_nnz)))
        bounds = _balanced_bounds(cost, n_groups)
        pairs = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
        if fused:
            self.rows = FusedRows(cm1, reg)
            self.groups: list[RowGroup] | list[RowRange] = [RowRange(a, b) for a, b in pairs]
            return

        def group(bounds: tuple[int, int]) -> RowGroup:
            return RowGroup(cm1, reg, *bounds, streamed)

        # built in ``pool`` when given (the per-group index conversions add up at 10M)
        self.groups = list((pool.map if pool is not None else map)(group, pairs))


def _balanced_bounds(cost: torch.Tensor, groups: int) -> list[int]:
    """Row boundaries ``[0, ..., n]`` cutting rows into ``groups`` runs of ~equal cost.

    ``cost`` (n + 1,) is non-decreasing: the work of rows ``[0, j)`` (a CSR's ``crow`` counts
    non-zeros).
    """
    n, total = cost.numel() - 1, int(cost[-1])
    targets = [total * g // groups for g in range(1, groups)]
    cuts = torch.searchsorted(cost, torch.tensor(targets, dtype=cost.dtype)).tolist()
    return sorted({0, n, *[min(int(c), n) for c in cuts]})


def run_groups(
    plan: SweepPlan, solve: Callable[[RowGroup], object], pool: ThreadPoolExecutor | None
) -> None:
    """``solve(group)`` for every group of ``plan``, in ``pool`` when given.

    Groups own disjoint rows, so threads never write the same memory.
    """
    if pool is None:
        for group in plan.groups:
            solve(group)
        return
    for future in [pool.submit(solve, group) for group in plan.groups]:
        future.result()


def _init_worker() -> None:
    """Per worker thread: single-threaded ops, and denormals flushed to zero.

    Converged rows drive CG residuals towards zero, and x86 CPUs process denormal floats ~100x
    slower (a fit ran twice as slow). The flag is per thread, so the math runs in the pool's
    threads and never changes the caller's thread.
    """
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


@contextmanager
def task_pool(num_threads: int, device: torch.device) -> Iterator[ThreadPoolExecutor | None]:
    """Threads that each run whole row groups with one intra-op torch thread (CPU; else None).

    torch's intra-op thread count is process-wide, so it is 1 for the fit and restored after.
    """
    if device.type != "cpu":
        yield None
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(
            max(1, num_threads), thread_name_prefix="als", initializer=_init_worker
        ) as pool:
            yield pool
    finally:
        torch.set_num_threads(previous)


def in_pool(pool: ThreadPoolExecutor | None, fn: Callable[[], float]) -> float:
    """``fn()`` in a worker of ``pool`` (denormals flushed there), else in this thread."""
    return fn() if pool is None else pool.submit(fn).result()


def all_finite(t: torch.Tensor, pool: ThreadPoolExecutor | None = None, parts: int = 1) -> bool:
    """Whether every value of ``t`` is finite, checked in ``parts`` row chunks in ``pool``."""
    chunks = t.chunk(parts) if parts > 1 else (t,)

    def finite(chunk: torch.Tensor) -> bool:
        # one float32 pass, no (n, k) bool temporary (16x faster than isfinite().all() or a
        # float64 sum): inf and NaN always make the sum non-finite, so a finite sum means every
        # value is; only finite values overflowing the sum need the exact check
        return bool(torch.isfinite(chunk.sum())) or bool(torch.isfinite(chunk).all())

    if pool is None:
        return all(finite(chunk) for chunk in chunks)
    return all(f.result() for f in [pool.submit(finite, chunk) for chunk in chunks])


def default_num_threads(device: torch.device) -> int:
    """Threads for a fit: torch's intra-op setting on CPU (a GPU fit uses one host thread)."""
    if device.type != "cpu":
        return 1
    return max(1, torch.get_num_threads() or os.cpu_count() or 1)
