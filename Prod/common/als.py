"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit Feedback
Datasets", ICDM) as pure tensor functions: no I/O, device and dtype come from the inputs.

Notation (paper, section 4): ``p_ui`` preference (1 where the user interacted, else 0), ``c_ui``
confidence (eq. 2 linear ``1 + alpha * w_ui``; eq. 6 log ``1 + alpha * log(1 + w_ui / eps)``),
``x_u`` user factor, ``y_i`` item factor. The objective (eq. 3) is

    sum_{u,i} c_ui (p_ui - x_u^T y_i)^2 + sum_u lambda_u ||x_u||^2 + sum_i lambda_i ||y_i||^2

with ``lambda_u = regularization * n_u ** frequency_exponent`` (frequency-aware regularisation as
in Rendle et al. 2022, "Revisiting the Performance of iALS on Item Recommendation Benchmarks";
exponent 0 is the paper's plain L2, 1 is ALS-WR's weighted-lambda).

Each half sweep solves eq. 4, ``x_u = (Y^T C^u Y + lambda_u I)^-1 Y^T C^u p(u)``, for all users at
once with a few conjugate-gradient steps warm-started from the previous factors (as in the
``implicit`` library), using ``Y^T C^u Y = Y^T Y + Y^T (C^u - I) Y`` so that only the non-zeros of
the sparse matrix are touched. A slow dense closed-form reference (:func:`reference_solve`) sits
beside it for tests.
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch

from Prod.common.errors import InvalidInput, TrainingError

__all__ = [
    "ALSParams",
    "ALSModel",
    "build_user_items",
    "confidence_matrix",
    "fit_als",
    "fold_in_user",
    "gramian",
    "cg_sweep",
    "SweepPlan",
    "reference_solve",
    "objective",
    "regularization_per_row",
    "should_stream",
]

# torch warns once per process that CSR support is "beta"; the ops used here are stable since 2.0
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ProgressFn = Callable[[int, int, float | None], None]
"""``progress(iteration_done, iterations_total, loss_or_None)`` called after each sweep."""

_CG_EPS = 1e-10  # squared-residual floor below which a row's CG is considered converged


@dataclass(frozen=True)
class ALSParams:
    """Hyperparameters of implicit ALS (serialisable to/from a JSON file)."""

    factors: int = 64
    iterations: int = 15
    regularization: float = 0.05
    alpha: float = 2.0
    confidence: Literal["linear", "log"] = "linear"
    epsilon: float = 1.0  # only for confidence="log" (eq. 6)
    cg_steps: int = 3
    seed: int = 0
    frequency_exponent: float = 0.0  # lambda_u = regularization * n_u ** frequency_exponent
    init_scale: float = 0.01  # std of the random initial factors

    def __post_init__(self) -> None:
        problems = []
        if self.factors < 1:
            problems.append("factors must be >= 1")
        if self.iterations < 0:
            problems.append("iterations must be >= 0")
        if self.regularization < 0:
            problems.append("regularization must be >= 0")
        if self.alpha < 0:
            problems.append("alpha must be >= 0")
        if self.confidence not in ("linear", "log"):
            problems.append("confidence must be 'linear' or 'log'")
        if self.epsilon <= 0:
            problems.append("epsilon must be > 0")
        if self.cg_steps < 1:
            problems.append("cg_steps must be >= 1")
        if self.frequency_exponent < 0:
            problems.append("frequency_exponent must be >= 0")
        if problems:
            raise InvalidInput("invalid ALS parameters: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict) -> ALSParams:
        """Build from a mapping; unknown keys are refused (they are usually typos)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"unknown ALS parameters: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> ALSParams:
        """Read a JSON params file; a ``"params"`` sub-object is accepted (tune writes metadata)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInput(f"ALS params file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"ALS params file {path} is not valid JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("params"), dict):
            data = data["params"]
        if not isinstance(data, dict):
            raise InvalidInput(f"ALS params file {path} must hold a JSON object")
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_file(self, path: str | Path, **metadata: object) -> Path:
        """Write ``{"params": {...}, **metadata}`` as JSON (creating folders)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"params": self.to_dict(), **metadata}
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        return path


@dataclass
class ALSModel:
    """Fitted factors: ``user_factors (n_users, k)``, ``item_factors (n_items, k)`` float32."""

    user_factors: torch.Tensor
    item_factors: torch.Tensor
    losses: list[float]
    params: ALSParams


# --------------------------------------------------------------------------------------------
# Sparse input


def build_user_items(
    user_idx: torch.Tensor,
    item_idx: torch.Tensor,
    weights: torch.Tensor,
    n_users: int,
    n_items: int,
) -> torch.Tensor:
    """Sparse CSR ``(n_users, n_items)`` float32 of interaction weights; duplicates are summed.

    ``user_idx``, ``item_idx``: (nnz,) int; ``weights``: (nnz,) > 0.
    """
    user_idx = torch.as_tensor(user_idx, dtype=torch.int64)
    item_idx = torch.as_tensor(item_idx, dtype=torch.int64, device=user_idx.device)
    weights = torch.as_tensor(weights, dtype=torch.float32, device=user_idx.device)
    if not (user_idx.shape == item_idx.shape == weights.shape) or user_idx.dim() != 1:
        raise InvalidInput("user_idx, item_idx and weights must be 1-D of the same length")
    if user_idx.numel():
        if int(user_idx.min()) < 0 or int(user_idx.max()) >= n_users:
            raise InvalidInput("user index out of range")
        if int(item_idx.min()) < 0 or int(item_idx.max()) >= n_items:
            raise InvalidInput("item index out of range")
        if not bool(torch.isfinite(weights).all()) or bool((weights <= 0).any()):
            raise InvalidInput("weights must be finite and > 0")
    coo = torch.sparse_coo_tensor(
        torch.stack([user_idx, item_idx]), weights, (n_users, n_items), check_invariants=False
    ).coalesce()
    return coo.to_sparse_csr()


def confidence_matrix(user_items: torch.Tensor, params: ALSParams) -> torch.Tensor:
    """CSR with the same pattern whose values are ``c_ui - 1`` (eq. 2 or eq. 6), float32."""
    w = user_items.values().to(torch.float32)
    if params.confidence == "log":
        extra = params.alpha * torch.log1p(w / params.epsilon)
    else:
        extra = params.alpha * w
    return torch.sparse_csr_tensor(
        user_items.crow_indices(),
        user_items.col_indices(),
        extra,
        user_items.shape,
        check_invariants=False,
    )


def _transpose_csr(csr: torch.Tensor) -> torch.Tensor:
    """The CSR of ``csr.T`` (built once per fit: items' rows for the item half sweep).

    A stable sort of the column indices puts each column's entries in row order. Sorting them as
    int32 is ~3x faster than torch's own ``t().to_sparse_csr()`` (which sorts int64 pairs); on
    10M interactions that conversion took longer than an iteration.
    """
    n, m = csr.shape
    crow, col = csr.crow_indices(), csr.col_indices()
    keys = col.to(torch.int32) if m < 2**31 else col
    order = torch.sort(keys, stable=True).indices
    rows = torch.repeat_interleave(
        torch.arange(n, dtype=crow.dtype, device=crow.device),
        crow[1:] - crow[:-1],
        output_size=col.numel(),
    )
    counts = torch.bincount(col, minlength=m)
    t_crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(crow.dtype)
    return torch.sparse_csr_tensor(
        t_crow,
        rows.index_select(0, order),
        csr.values().index_select(0, order),
        (m, n),
        check_invariants=False,
    )


def regularization_per_row(csr: torch.Tensor, params: ALSParams) -> torch.Tensor:
    """``lambda_u`` for each row: ``regularization * max(n_u, 1) ** frequency_exponent``, (n,)."""
    crow = csr.crow_indices()
    counts = (crow[1:] - crow[:-1]).to(torch.float32).clamp_min(1.0)
    if params.frequency_exponent == 0:
        return torch.full_like(counts, params.regularization)
    return params.regularization * counts.pow(params.frequency_exponent)


def gramian(item_factors: torch.Tensor) -> torch.Tensor:
    """``Y^T Y`` (k, k) of ``item_factors`` (n_items, k); cacheable between fold-ins."""
    return item_factors.T @ item_factors


# --------------------------------------------------------------------------------------------
# Solvers
#
# A half sweep solves eq. 4 for every row with a few warm-started CG steps. Rows are independent,
# so the rows are cut into contiguous groups of about equal non-zeros, one per thread; each thread
# runs its group's whole CG with one intra-op torch thread (like implicit's OpenMP loop over
# users). Fine-grained intra-op parallelism would synchronise the threads after each of the ~20
# ops of a CG step, which costs more than the ops themselves on small data or a loaded machine.

_MIN_NNZ_PER_THREAD = 32_768  # below this, another thread costs more than it gives
# Groups per thread, handed out as threads free up. More than one would let a thread that the OS
# deschedules delay only its current group (like OpenMP's dynamic schedule), but measured on 2
# loaded cores (1M events, 4 alternating repeats) 4 groups per thread cost 15% more CPU and no
# less wall time than 1, so one contiguous group per thread it is.
_GROUPS_PER_THREAD = 1
_MIN_NNZ_PER_GROUP = 16_384


def _row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise inner products of two (n, k) tensors -> (n,)."""
    return torch.linalg.vecdot(a, b)


def _row_sq_norms(a: torch.Tensor) -> torch.Tensor:
    """Row-wise squared norms of (n, k) -> (n,), in one pass (no (n, k) temporary)."""
    return torch.linalg.vector_norm(a, dim=1).square_()


# Streaming. On ~10M non-zeros the fixed side's factors (tens of MB) no longer fit in the CPU
# caches, so each random row read of the two sparse products in every CG step (the dots, then
# the weighted sum) is a DRAM miss. A streamed group instead copies, once per half sweep, the
# factor row of each of its non-zeros in non-zero order into a buffer, and the products
# read that buffer front to back (the hardware prefetcher follows; nothing is read at random).
# Measured on 5.2M non-zeros, one thread, per non-zero: the two products of one CG step take
# 30 + 29 ns on the ordered copy, against 62 + 47 ns on a copy of the distinct rows in index order
# (rows of generated data repeat little inside a group: 0.9 distinct rows per non-zero) and more
# reading at random; the copy costs ~60-100 ns once per half sweep. When the factors fit in
# cache (~1M non-zeros) the random reads are cheaper than the copy, so small fits do not stream.
_STREAM_MIN_BYTES = 16 * 2**20
# 64k non-zeros (a 16 MB copy, read front to back): 4-iteration fits at 10M, alternated 3+3 times
# twice: 13.1-14.5 s against 14.8-17.2 s with 16k (fewer groups, fewer small ops per sweep)
_STREAM_GROUP_NNZ = 65_536
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


class _SweepWorkspace:
    """The fixed sparse structure of one group of rows plus a reusable buffer.

    ``cm1_values`` (nnz,) are ``c_ui - 1``; ``work`` is a CSR with the group's row pattern and
    int32 indices (what MKL's sparse kernels take, so nothing is converted per call) whose values
    are rewritten in place on every CG step: first the dots at the non-zeros, then the
    coefficients of the sparse product. Its columns are the other side's rows (n, m), or, when
    ``streamed``, positions ``0..nnz-1`` in a per-sweep copy of the other side's row of every
    non-zero, in non-zero order (n, nnz). Built once per fit, so no step allocates nnz-sized
    memory.
    """

    def __init__(self, cm1: torch.Tensor, streamed: bool = False) -> None:
        self.cm1_values = cm1.values().contiguous()
        self.confidence = self.cm1_values + 1.0  # c_ui at the non-zeros
        crow = cm1.crow_indices().to(torch.int32)
        nnz = self.cm1_values.numel()
        if streamed:
            self.gather_index: torch.Tensor | None = cm1.col_indices().to(torch.int64)
            cols = torch.arange(nnz, dtype=torch.int32, device=crow.device)
            shape = (cm1.shape[0], nnz)
        else:
            self.gather_index = None
            cols, shape = cm1.col_indices().to(torch.int32), cm1.shape
        # zeros, not empty: sampled_addmm computes beta * input even for beta = 0 (NaN * 0 = NaN)
        self.work = torch.sparse_csr_tensor(
            crow, cols, torch.zeros_like(self.cm1_values), shape, check_invariants=False
        )

    def source(self, other: torch.Tensor) -> torch.Tensor:
        """What the products read: ``other`` (m, k), or its row of every non-zero (nnz, k)."""
        if self.gather_index is None:
            return other
        out = _gather_buffer(self.gather_index.numel(), other.shape[1], other)
        return torch.index_select(other, 0, self.gather_index, out=out)

    def apply_sparse(
        self, out: torch.Tensor, source: torch.Tensor, x: torch.Tensor, residual: bool = False
    ) -> torch.Tensor:
        """``out += sum_i s_ui y_i`` per row, ``s_ui = (c_ui - 1) x_u^T y_i`` (eq. 4's sparse part).

        With ``residual`` the coefficients are ``-(c_ui - (c_ui - 1) x_u^T y_i)`` instead, so
        ``out`` accumulates ``-b_u + Y^T (C^u - I) Y x_u``. ``source`` = :meth:`source` of Y,
        ``x``, ``out`` (n, k). The dots at the non-zeros come from one ``sampled_addmm`` over the
        pattern.
        """
        torch.sparse.sampled_addmm(self.work, x, source.T, beta=0.0, out=self.work)
        coef = self.work.values().mul_(self.cm1_values)
        if residual:
            coef.sub_(self.confidence)
        return out.addmm_(self.work, source)


def _conjugate_gradient(
    x: torch.Tensor,
    residual: torch.Tensor,
    apply_a: Callable[[torch.Tensor], torch.Tensor],
    cg_steps: int,
) -> torch.Tensor:
    """``cg_steps`` CG steps on the row-wise SPD systems ``A_u x_u = b_u``, warm-started at ``x``.

    ``x``: (n, k) updated in place and returned; ``residual``: (n, k) ``b - A x`` at the start
    (updated in place); ``apply_a(v (n, k)) -> (n, k)`` the product ``A_u v_u`` of every row. A
    row stops once its squared residual is below ``_CG_EPS`` (as ``implicit`` does).
    """
    r = residual
    p = r.clone()
    rs_old = _row_sq_norms(r)
    for step_index in range(cg_steps):
        active = rs_old > _CG_EPS
        if not bool(active.any()):
            break
        ap = apply_a(p)
        p_ap = _row_dots(p, ap)
        step = torch.where(active & (p_ap > 0), rs_old / p_ap.clamp_min(1e-30), 0.0).unsqueeze(1)
        x.addcmul_(step, p)
        if step_index == cg_steps - 1:
            break  # the next direction would not be used
        r.addcmul_(step, ap, value=-1.0)
        rs_new = _row_sq_norms(r)
        beta = torch.where(active, rs_new / rs_old.clamp_min(1e-30), 0.0).unsqueeze(1)
        p = p.mul_(beta).add_(r)  # p = r + beta p, in place
        rs_old = rs_new
    return x


class _RowGroup:
    """Rows ``[start, stop)`` of a half sweep with their own sparse workspace (one per thread)."""

    def __init__(
        self, cm1: torch.Tensor, reg: torch.Tensor, start: int, stop: int, streamed: bool = False
    ) -> None:
        crow = cm1.crow_indices()
        lo, hi = int(crow[start]), int(crow[stop])
        sub = torch.sparse_csr_tensor(
            crow[start : stop + 1] - lo,
            cm1.col_indices()[lo:hi],
            cm1.values()[lo:hi],
            (stop - start, cm1.shape[1]),
            check_invariants=False,
        )
        self.start, self.stop, self.nnz = start, stop, hi - lo
        self.workspace = _SweepWorkspace(sub, streamed)
        group_reg = reg[start:stop]
        # one lambda for all rows (frequency_exponent = 0) folds into Y^T Y: one op less per step
        uniform = group_reg.numel() > 0 and bool((group_reg == group_reg[0]).all())
        self.uniform_reg = float(group_reg[0]) if uniform else None
        self.reg = group_reg.unsqueeze(1)  # (b, 1)

    def solve(
        self, x: torch.Tensor, other: torch.Tensor, yty: torch.Tensor, cg_steps: int
    ) -> torch.Tensor:
        """CG on eq. 4 for this group's rows of ``x`` (n, k), in place; ``other`` = Y (m, k)."""
        block = x[self.start : self.stop]  # a view: the CG updates x directly
        ws = self.workspace
        if self.uniform_reg is not None:
            eye = torch.eye(yty.shape[0], dtype=yty.dtype, device=yty.device)
            dense = yty + self.uniform_reg * eye

            def apply_dense(v: torch.Tensor) -> torch.Tensor:
                return torch.mm(v, dense)
        else:

            def apply_dense(v: torch.Tensor) -> torch.Tensor:
                return torch.mm(v, yty).addcmul_(self.reg, v)  # (Y^T Y + lambda_u I) v

        source = ws.source(other)

        def apply_a(v: torch.Tensor, residual: bool = False) -> torch.Tensor:
            return ws.apply_sparse(apply_dense(v), source, v, residual)

        return _conjugate_gradient(block, apply_a(block, residual=True).neg_(), apply_a, cg_steps)


class SweepPlan:
    """One side's half sweep cut into row groups; built once per fit from the CSR ``c_ui - 1``.

    ``cm1``: CSR (n, m); ``reg``: (n,) ``lambda_u``. With one thread the rows are one group;
    with ``num_threads`` > 1 (fewer when the matrix is small, so small fits do not pay for threads
    they cannot use) they are cut into up to ``groups_per_thread`` contiguous groups per thread of
    about equal non-zeros, which the threads take one at a time. ``streamed`` groups (see
    :func:`should_stream`) are also cut to at most ``stream_group_nnz`` non-zeros each.
    """

    def __init__(
        self,
        cm1: torch.Tensor,
        reg: torch.Tensor,
        num_threads: int = 1,
        min_nnz_per_thread: int = _MIN_NNZ_PER_THREAD,
        groups_per_thread: int = _GROUPS_PER_THREAD,
        min_nnz_per_group: int = _MIN_NNZ_PER_GROUP,
        *,
        streamed: bool = False,
        stream_group_nnz: int = _STREAM_GROUP_NNZ,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        nnz = int(cm1._nnz())
        self.num_threads = max(1, min(num_threads, nnz // max(1, min_nnz_per_thread)))
        n_groups = 1
        if self.num_threads > 1:
            most = max(self.num_threads, nnz // max(1, min_nnz_per_group))
            n_groups = min(self.num_threads * max(1, groups_per_thread), most)
        if streamed:
            n_groups = max(n_groups, -(-nnz // max(1, stream_group_nnz)))
        bounds = _balanced_bounds(cm1.crow_indices(), n_groups)
        pairs = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]

        def group(bounds: tuple[int, int]) -> _RowGroup:
            return _RowGroup(cm1, reg, *bounds, streamed)

        # built in ``pool`` when given (the per-group index conversions add up at 10M)
        self.groups = list((pool.map if pool is not None else map)(group, pairs))


def _balanced_bounds(crow: torch.Tensor, groups: int) -> list[int]:
    """Row boundaries ``[0, ..., n]`` cutting a CSR into ``groups`` runs of ~equal non-zeros."""
    n, total = crow.numel() - 1, int(crow[-1])
    targets = [total * g // groups for g in range(1, groups)]
    cuts = torch.searchsorted(crow.cpu(), torch.tensor(targets, dtype=crow.dtype)).tolist()
    return sorted({0, n, *[min(int(c), n) for c in cuts]})


def _run_plan(
    plan: SweepPlan,
    x: torch.Tensor,
    other: torch.Tensor,
    cg_steps: int,
    pool: ThreadPoolExecutor | None,
) -> None:
    """Solve every group of ``plan`` on ``x`` (n, k) in place, in ``pool`` when given."""
    # once per half sweep, shared by the groups; computed whole (not split over the threads) so
    # that fits agree bit for bit across thread counts: early sweeps are ill-conditioned, and a
    # rounding difference in Y^T Y gives different (equally good) factors
    yty = gramian(other)

    def run(group: _RowGroup) -> None:
        group.solve(x, other, yty, cg_steps)  # groups own disjoint rows: threads never collide

    if pool is None:
        for group in plan.groups:
            run(group)
        return
    for future in [pool.submit(run, group) for group in plan.groups]:
        future.result()


def _all_finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _init_worker() -> None:
    """Per worker thread: single-threaded ops, and denormals flushed to zero.

    Converged rows drive CG residuals and directions towards zero; products of such values are
    denormal floats, which x86 CPUs process ~100x slower (measured: a fit twice as slow). The
    flag is per thread, which is why the math runs in the pool's threads and never changes the
    caller's thread.
    """
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


@contextmanager
def _task_pool(num_threads: int, device: torch.device) -> Iterator[ThreadPoolExecutor | None]:
    """Threads that each run whole row groups with one intra-op torch thread (CPU only).

    torch's intra-op thread count is process-wide, so it is set to 1 for the fit and restored
    afterwards (each op is then single-threaded; the parallelism comes from the groups).
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


def _in_pool(pool: ThreadPoolExecutor | None, fn: Callable[[], float]) -> float:
    return fn() if pool is None else pool.submit(fn).result()


def default_num_threads(device: torch.device) -> int:
    """Threads for a fit: torch's intra-op setting on CPU (a GPU fit uses one host thread)."""
    if device.type != "cpu":
        return 1
    return max(1, torch.get_num_threads() or os.cpu_count() or 1)


def cg_sweep(
    cm1: torch.Tensor | SweepPlan,
    x: torch.Tensor,
    other: torch.Tensor,
    reg: torch.Tensor,
    cg_steps: int,
    *,
    num_threads: int = 1,
) -> torch.Tensor:
    """One half sweep: a few warm-started CG steps on eq. 4 for every row at once.

    ``cm1``: CSR (n, m) float32 with values ``c_ui - 1`` (or its :class:`SweepPlan`, reused
    across sweeps; the plan holds the ``reg`` it was built with); ``x``: (n, k) current factors
    (the warm start, updated in place and returned); ``other``: (m, k) the fixed side's factors;
    ``reg``: (n,) ``lambda_u``. Solves ``(Y^T Y + Y^T (C^u - I) Y + lambda_u I) x_u =
    Y^T C^u p(u)`` where ``p_ui = 1`` at the non-zeros, so ``b_u = sum_i c_ui y_i``.
    ``num_threads`` > 1 solves row groups in parallel threads (CPU).
    """
    plan = cm1 if isinstance(cm1, SweepPlan) else SweepPlan(cm1, reg, num_threads)
    with _task_pool(plan.num_threads, x.device) as pool:
        _run_plan(plan, x, other, cg_steps, pool)
    return x


def reference_solve(
    confidence_dense: torch.Tensor,
    preference_dense: torch.Tensor,
    other: torch.Tensor,
    reg: torch.Tensor,
) -> torch.Tensor:
    """Slow, obviously-correct eq. 4 per row: ``x_u = (Y^T C^u Y + lambda_u I)^-1 Y^T C^u p(u)``.

    ``confidence_dense``: (n, m) full ``c_ui`` (1 where no interaction); ``preference_dense``:
    (n, m) ``p_ui`` in {0, 1}; ``other``: (m, k); ``reg``: (n,). Returns (n, k) in float64 math.
    """
    y = other.double()
    k = y.shape[1]
    rows = []
    for u in range(confidence_dense.shape[0]):
        cu = confidence_dense[u].double()
        a = y.T @ (cu.unsqueeze(1) * y) + float(reg[u]) * torch.eye(k, dtype=torch.float64)
        b = y.T @ (cu * preference_dense[u].double())
        rows.append(torch.linalg.solve(a, b))
    return torch.stack(rows).to(other.dtype)


def objective(
    cm1: torch.Tensor,
    user_factors: torch.Tensor,
    item_factors: torch.Tensor,
    user_reg: torch.Tensor,
    item_reg: torch.Tensor,
) -> float:
    """Eq. 3 without materialising the dense matrix.

    ``sum_{all u,i} (x_u^T y_i)^2`` (c=1, p=0 everywhere) is ``trace(X^T X Y^T Y)``; the non-zeros
    then add ``c (1 - s)^2 - s^2`` with ``s = x_u^T y_i``. Plus the L2 terms. Returns a float.
    """
    x64, y64 = user_factors.double(), item_factors.double()
    dense_part = torch.sum((x64.T @ x64) * (y64.T @ y64))
    dots = torch.sparse.sampled_addmm(cm1, user_factors, item_factors.T, beta=0.0).values()
    c = cm1.values().double() + 1.0
    s = dots.double()
    nz_part = torch.sum(c * (1.0 - s) ** 2 - s**2)
    l2 = torch.sum(user_reg.double() * (x64**2).sum(1)) + torch.sum(
        item_reg.double() * (y64**2).sum(1)
    )
    return float(dense_part + nz_part + l2)


def _check_finite(
    name: str,
    factors: torch.Tensor,
    iteration: int,
    pool: ThreadPoolExecutor | None = None,
    parts: int = 1,
) -> None:
    chunks = factors.chunk(parts) if parts > 1 else (factors,)  # row chunks, one per thread
    if pool is None:
        finite = [_all_finite(chunk) for chunk in chunks]
    else:
        finite = [f.result() for f in [pool.submit(_all_finite, chunk) for chunk in chunks]]
    if not all(finite):
        raise TrainingError(
            f"ALS produced non-finite {name} at iteration {iteration}; "
            "lower alpha or raise regularization",
            iteration=iteration,
        )


def _resolve_device(user_items: torch.Tensor, device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        if device == "auto" and torch.cuda.is_available():
            return torch.device("cuda")
        return user_items.device
    return torch.device(device)


def init_factors(n: int, k: int, params: ALSParams, offset: int, device: torch.device):
    """Seeded ``N(0, init_scale^2)`` factors (n, k) float32; ``offset`` separates users/items.

    Zero-mean, not positive as in ``implicit``: positive factors start near one shared direction,
    which fits popularity first (10M interactions, 3 iterations: nDCG@10 0.00358 against 0.00328)
    but makes the early sweeps so ill-conditioned that float rounding changes the factors (CPU
    and CUDA fits of the same data differed by 0.04, thread counts too) and small fits ended at a
    higher loss (171.0 against 168.2 after 15 iterations in the CUDA test). Reproducible fits win.
    """
    gen = torch.Generator(device="cpu").manual_seed(params.seed * 2 + offset)
    return (torch.randn(n, k, generator=gen) * params.init_scale).to(device)


def _start(
    given: torch.Tensor | None,
    shape: tuple[int, int],
    params: ALSParams,
    offset: int,
    device: torch.device,
) -> torch.Tensor:
    """A copy of the warm-start factors ``given`` (checked against ``shape``), else seeded ones."""
    if given is None:
        return init_factors(*shape, params, offset, device)
    if tuple(given.shape) != shape:
        raise InvalidInput(f"warm-start factors have shape {tuple(given.shape)}, expected {shape}")
    return given.to(device=device, dtype=torch.float32).clone()


def fit_als(
    user_items: torch.Tensor,
    params: ALSParams,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    *,
    compute_loss: bool = True,
    item_factors: torch.Tensor | None = None,
    user_factors: torch.Tensor | None = None,
    num_threads: int | None = None,
    streamed: bool | None = None,
) -> ALSModel:
    """Fit implicit ALS on ``user_items`` (CSR (n_users, n_items) float32 weights).

    Each iteration is a users half sweep then an items half sweep (:func:`cg_sweep`). ``device``:
    None = the input's device, "auto" = CUDA when present. ``progress(i, total, loss)`` is called
    after each iteration. ``compute_loss=False`` skips eq. 3 (for timing). ``item_factors``
    (n_items, k) and ``user_factors`` (n_users, k) warm start the fit (e.g. from a fit on almost
    the same data). ``num_threads``: CPU threads, each solving a contiguous group of rows with
    one intra-op torch thread (default: ``torch.get_num_threads()``; small matrices
    use fewer; torch's setting is restored afterwards). Results agree across thread counts up
    to float rounding. ``streamed``: copy the other side's rows per group before the CG (see
    :func:`should_stream`; None decides by size). Raises :class:`TrainingError` on non-finite
    factors. Returns factors on ``device``.
    """
    if user_items.layout != torch.sparse_csr:
        raise InvalidInput("user_items must be a torch sparse CSR tensor")
    dev = _resolve_device(user_items, device)
    n_users, n_items = user_items.shape
    k = params.factors
    ui = user_items.to(dev)
    cm1_users = confidence_matrix(ui, params)
    cm1_items = _transpose_csr(cm1_users)
    user_reg = regularization_per_row(cm1_users, params)
    item_reg = regularization_per_row(cm1_items, params)
    threads = default_num_threads(dev) if num_threads is None else max(1, num_threads)

    def stream(n_other: int) -> bool:
        return should_stream(n_other, k, dev) if streamed is None else streamed

    x = _start(user_factors, (n_users, k), params, 0, dev)
    y = _start(item_factors, (n_items, k), params, 1, dev)

    losses: list[float] = []
    with _task_pool(threads, dev) as pool:
        users_plan = SweepPlan(cm1_users, user_reg, threads, streamed=stream(n_items), pool=pool)
        items_plan = SweepPlan(cm1_items, item_reg, threads, streamed=stream(n_users), pool=pool)
        for it in range(1, params.iterations + 1):
            _run_plan(users_plan, x, y, params.cg_steps, pool)
            _run_plan(items_plan, y, x, params.cg_steps, pool)
            loss = None
            if compute_loss:  # in a worker too: factors near zero make denormals in eq. 3
                loss = _in_pool(pool, lambda: objective(cm1_users, x, y, user_reg, item_reg))
            losses += _after_iteration(it, params, progress, x, y, loss, pool, threads)
    return ALSModel(user_factors=x, item_factors=y, losses=losses, params=params)


def _after_iteration(
    it: int,
    params: ALSParams,
    progress: ProgressFn | None,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: float | None,
    pool: ThreadPoolExecutor | None = None,
    parts: int = 1,
) -> list[float]:
    """Check the factors and the loss (eq. 3, when computed), report progress; [loss] or []."""
    _check_finite("user factors", x, it, pool, parts)
    _check_finite("item factors", y, it, pool, parts)
    if loss is not None and not math.isfinite(loss):
        raise TrainingError(f"ALS loss is not finite at iteration {it}", iteration=it)
    if progress is not None:
        progress(it, params.iterations, loss)
    return [] if loss is None else [loss]


def fold_in_user(
    item_factors: torch.Tensor,
    item_indices: torch.Tensor,
    weights: torch.Tensor,
    params: ALSParams,
    *,
    yty: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact eq. 4 for one user from its interactions with fixed items ("recalculate user").

    ``item_factors``: (n_items, k) float32; ``item_indices``: (m,) int (duplicates summed);
    ``weights``: (m,) > 0; ``yty``: optional cached :func:`gramian` (k, k). Solves
    ``(Y^T Y + Y_m^T (C_m - I) Y_m + lambda_u I) x = Y_m^T c_m`` by Cholesky. Returns (k,).
    A user with no interactions gets the zero vector.
    """
    k = item_factors.shape[1]
    dev, dtype = item_factors.device, item_factors.dtype
    idx = torch.as_tensor(item_indices, dtype=torch.int64, device=dev)
    w = torch.as_tensor(weights, dtype=dtype, device=dev)
    if idx.numel() == 0:
        return torch.zeros(k, dtype=dtype, device=dev)
    if idx.shape != w.shape:
        raise InvalidInput("item_indices and weights must have the same length")
    idx, inverse = torch.unique(idx, return_inverse=True)
    w = torch.zeros(idx.numel(), dtype=dtype, device=dev).index_add_(0, inverse, w)
    if params.confidence == "log":
        cm1 = params.alpha * torch.log1p(w / params.epsilon)
    else:
        cm1 = params.alpha * w
    y_m = item_factors.index_select(0, idx)
    if yty is None:
        yty = gramian(item_factors)
    lam = params.regularization * float(idx.numel()) ** params.frequency_exponent
    a = yty + (y_m.T * cm1) @ y_m
    a.diagonal().add_(lam)
    b = (cm1 + 1.0) @ y_m
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:  # singular without regularisation: fall back to least squares
        return torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1)
    return torch.cholesky_solve(b.unsqueeze(1), chol).squeeze(1)
