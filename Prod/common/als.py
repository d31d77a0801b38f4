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
the sparse matrix are touched. A slow dense closed-form reference (:func:`_reference_solve`)
sits beside it for tests. How the rows of a half sweep are spread over CPU threads is
:mod:`Prod.common.als_cpu`, and :mod:`Prod.common.als_fused` runs the same CG a row at a time on
CPU (the default there); nothing here depends on them but speed.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch

from Prod.common import als_fused
from Prod.common.als_cpu import (
    RowGroup,
    RowRange,
    SweepPlan,
    all_finite,
    default_num_threads,
    in_pool,
    run_groups,
    should_stream,
    task_pool,
)
from Prod.common.errors import InvalidInput, TrainingError

__all__ = [
    "ALSParams",
    "ALSModel",
    "ProgressFn",
    "build_user_items",
    "confidence_matrix",
    "contribution_shares",
    "explain_scores",
    "fit_als",
    "fold_in_user",
    "gramian",
    "resolve_kernel",
]

# torch warns once per process that CSR support is "beta"; the ops used here are stable since 2.0
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

Kernel = Literal["auto", "fused", "batched"]
"""How a half sweep runs: ``fused`` (CPU only: :mod:`Prod.common.als_fused`, a row's whole CG at
a time), ``batched`` (tensor ops over blocks of rows: CPU or CUDA), ``auto`` (fused on CPU when
numba is installed, else batched)."""

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
# Sparse input and confidence


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


def _confidence_minus_one(w: torch.Tensor, params: ALSParams) -> torch.Tensor:
    """``c_ui - 1`` of interaction weights ``w``: eq. 2 ``alpha * w`` or eq. 6
    ``alpha * log(1 + w / epsilon)`` (``params.confidence``)."""
    if params.confidence == "log":
        return params.alpha * torch.log1p(w / params.epsilon)
    return params.alpha * w


def confidence_matrix(user_items: torch.Tensor, params: ALSParams) -> torch.Tensor:
    """CSR with the same pattern whose values are ``c_ui - 1`` (eq. 2 or eq. 6), float32."""
    return torch.sparse_csr_tensor(
        user_items.crow_indices(),
        user_items.col_indices(),
        _confidence_minus_one(user_items.values().to(torch.float32), params),
        user_items.shape,
        check_invariants=False,
    )


def _transpose_csr(csr: torch.Tensor) -> torch.Tensor:
    """The CSR of ``csr.T`` (built once per fit: items' rows for the item half sweep).

    A stable sort of the column indices puts each column's entries in row order; int32 keys sort
    ~3x faster than torch's own ``t().to_sparse_csr()`` (int64 pairs).
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


def _regularization_per_row(csr: torch.Tensor, params: ALSParams) -> torch.Tensor:
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
# Solver: a half sweep solves eq. 4 for every row with a few warm-started CG steps


def _row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise inner products of two (n, k) tensors -> (n,)."""
    return torch.linalg.vecdot(a, b)


def _row_sq_norms(a: torch.Tensor) -> torch.Tensor:
    """Row-wise squared norms of (n, k) -> (n,), in one pass (no (n, k) temporary)."""
    return torch.linalg.vector_norm(a, dim=1).square_()


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
        # no early exit when every row has stopped: the check cost more than it saved
        active = rs_old > _CG_EPS
        ap = apply_a(p)
        p_ap = _row_dots(p, ap)
        # where() picks 0 for stopped rows and p^T A p <= 0 (p = 0), whatever the division gave
        step = torch.where(active & (p_ap > 0), rs_old / p_ap, 0.0).unsqueeze(1)
        x.addcmul_(step, p)
        if step_index == cg_steps - 1:
            break  # the next direction would not be used
        r.addcmul_(step, ap, value=-1.0)
        rs_new = _row_sq_norms(r)
        beta = torch.where(active, rs_new / rs_old, 0.0).unsqueeze(1)
        p = torch.addcmul(r, beta, p, out=p)  # p = r + beta p, in place, one pass
        rs_old = rs_new
    return x


def _add_sparse_part(
    group: RowGroup,
    out: torch.Tensor,
    source: torch.Tensor,
    x: torch.Tensor,
    residual: bool = False,
) -> torch.Tensor:
    """``out += sum_i s_ui y_i`` per row, ``s_ui = (c_ui - 1) x_u^T y_i`` (eq. 4's sparse part).

    With ``residual`` the coefficients are ``c_ui - (c_ui - 1) x_u^T y_i`` instead, so ``out``
    accumulates ``b_u - Y^T (C^u - I) Y x_u``. ``source`` = ``group.source(Y)``; ``x``, ``out``
    (b, k). The dots at the non-zeros come from one ``sampled_addmm`` over the group's pattern,
    written into ``group.work``.
    """
    work = group.work
    torch.sparse.sampled_addmm(work, x, source.T, beta=0.0, out=work)
    dots = work.values()
    if residual:
        torch.addcmul(group.confidence, dots, group.cm1_values, value=-1.0, out=dots)
    else:
        dots.mul_(group.cm1_values)
    return out.addmm_(work, source)


class _DenseTerm:
    """``(Y^T Y + lambda_u I) v`` for the rows of a group, and its negative, per half sweep.

    Groups whose rows share one lambda (every group when ``frequency_exponent`` is 0) fold it
    into one (k, k) matrix, built once per half sweep and value of lambda, not per group.
    """

    def __init__(self, yty: torch.Tensor, plan_groups: list[RowGroup]) -> None:
        self.yty, self.neg_yty = yty, -yty
        eye = torch.eye(yty.shape[0], dtype=yty.dtype, device=yty.device)
        self.folded: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
        for lam in {g.uniform_reg for g in plan_groups if g.uniform_reg is not None}:
            dense = yty + lam * eye
            self.folded[lam] = (dense, -dense)

    def apply(self, group: RowGroup, v: torch.Tensor, negate: bool = False) -> torch.Tensor:
        if group.uniform_reg is not None:
            return torch.mm(v, self.folded[group.uniform_reg][negate])
        out = torch.mm(v, self.neg_yty if negate else self.yty)
        return out.addcmul_(group.reg, v, value=-1.0 if negate else 1.0)


def _solve_group(
    group: RowGroup, x: torch.Tensor, other: torch.Tensor, dense: _DenseTerm, cg_steps: int
) -> torch.Tensor:
    """CG on eq. 4 for ``group``'s rows of ``x`` (n, k), in place; ``other`` = Y (m, k).

    ``A_u v = (Y^T Y + lambda_u I) v + Y^T (C^u - I) Y v``; the start residual is
    ``b_u - A_u x_u = -(Y^T Y + lambda_u I) x_u + sum_i (c_ui - (c_ui - 1) x_u^T y_i) y_i``
    with ``b_u = Y^T C^u p(u) = sum_i c_ui y_i``.
    """
    block = x[group.start : group.stop]  # a view: the CG updates x directly
    source = group.source(other)

    def apply_a(v: torch.Tensor) -> torch.Tensor:
        return _add_sparse_part(group, dense.apply(group, v), source, v)

    start = _add_sparse_part(group, dense.apply(group, block, negate=True), source, block, True)
    return _conjugate_gradient(block, start, apply_a, cg_steps)


def _half_sweep(
    plan: SweepPlan,
    x: torch.Tensor,
    other: torch.Tensor,
    cg_steps: int,
    pool: ThreadPoolExecutor | None,
) -> None:
    """Eq. 4 for every row of ``x`` (n, k), in place, given the fixed ``other`` (m, k)."""
    if plan.fused:
        rows, basis = plan.rows, als_fused.Eigenbasis(other, pool)

        def solve(group: RowRange) -> None:
            als_fused.solve_rows(rows, x, basis, group.start, group.stop, cg_steps, _CG_EPS)

        run_groups(plan, solve, pool)
        return
    # Y^T Y whole, not per thread: fits then agree bit for bit across thread counts (early sweeps
    # are ill-conditioned, and a rounding difference gives different, equally good factors)
    dense = _DenseTerm(gramian(other), plan.groups)
    run_groups(plan, lambda group: _solve_group(group, x, other, dense, cg_steps), pool)


def _cg_sweep(
    cm1: torch.Tensor | SweepPlan,
    x: torch.Tensor,
    other: torch.Tensor,
    reg: torch.Tensor,
    cg_steps: int,
    *,
    num_threads: int = 1,
) -> torch.Tensor:
    """One half sweep on its own: a few warm-started CG steps on eq. 4 for every row at once.

    ``cm1``: CSR (n, m) float32 with values ``c_ui - 1`` (or its :class:`SweepPlan`, which holds
    the ``reg`` it was built with); ``x``: (n, k) current factors (the warm start, updated in
    place and returned); ``other``: (m, k) the fixed side's factors; ``reg``: (n,) ``lambda_u``.
    Solves ``(Y^T Y + Y^T (C^u - I) Y + lambda_u I) x_u = Y^T C^u p(u)`` where ``p_ui = 1`` at
    the non-zeros, so ``b_u = sum_i c_ui y_i``.
    """
    plan = cm1 if isinstance(cm1, SweepPlan) else SweepPlan(cm1, reg, num_threads)
    with task_pool(plan.num_threads, x.device) as pool:
        _half_sweep(plan, x, other, cg_steps, pool)
    return x


# --------------------------------------------------------------------------------------------
# Reference solver and objective


def _reference_solve(
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


def _objective(
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


# --------------------------------------------------------------------------------------------
# Fit


def _check_finite(
    name: str,
    factors: torch.Tensor,
    iteration: int,
    pool: ThreadPoolExecutor | None = None,
    parts: int = 1,
) -> None:
    if not all_finite(factors, pool, parts):
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


def _init_factors(n: int, k: int, params: ALSParams, offset: int, device: torch.device):
    """Seeded ``N(0, init_scale^2)`` factors (n, k) float32; ``offset`` separates users/items.

    Zero-mean, not positive as in ``implicit``: positive factors start near one shared direction,
    and the ill-conditioned early sweeps then let float rounding change the result (CPU and CUDA
    fits of the same data differed by 0.04). Reproducible fits win.
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
        return _init_factors(*shape, params, offset, device)
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
    kernel: Kernel = "auto",
) -> ALSModel:
    """Fit implicit ALS on ``user_items`` (CSR (n_users, n_items) float32 weights).

    Each iteration is a users half sweep then an items half sweep (eq. 4, :func:`_half_sweep`).
    ``device``: None = the input's device, "auto" = CUDA when present. ``progress(i, total,
    loss)`` is called after each iteration. ``compute_loss=False`` skips eq. 3 (for timing).
    ``item_factors`` (n_items, k) and ``user_factors`` (n_users, k) warm start the fit (e.g. from
    a fit on almost the same data). ``num_threads`` (default ``torch.get_num_threads()``, which
    is restored afterwards), ``kernel`` (:data:`Kernel`) and ``streamed`` (batched kernel; None:
    by size) choose how the CPU runs the sweeps, see :mod:`Prod.common.als_cpu`; results agree
    across thread counts and kernels up to float rounding.
    Raises :class:`TrainingError` on non-finite factors. Returns factors on ``device``.
    """
    if user_items.layout != torch.sparse_csr:
        raise InvalidInput("user_items must be a torch sparse CSR tensor")
    dev = _resolve_device(user_items, device)
    n_users, n_items = user_items.shape
    k = params.factors
    ui = user_items.to(dev)
    fused = resolve_kernel(kernel, dev) == "fused"
    cm1_users = confidence_matrix(ui, params)
    cm1_items = (als_fused.transpose_csr if fused else _transpose_csr)(cm1_users)
    user_reg = _regularization_per_row(cm1_users, params)
    item_reg = _regularization_per_row(cm1_items, params)
    threads = default_num_threads(dev) if num_threads is None else max(1, num_threads)

    def stream(n_other: int) -> bool:
        return should_stream(n_other, k, dev) if streamed is None else streamed

    x = _start(user_factors, (n_users, k), params, 0, dev)
    y = _start(item_factors, (n_items, k), params, 1, dev)

    losses: list[float] = []
    with task_pool(threads, dev) as pool:
        sides = ((cm1_users, user_reg, n_items), (cm1_items, item_reg, n_users))
        users_plan, items_plan = (
            SweepPlan(cm1, reg, threads, streamed=stream(n_other), pool=pool, fused=fused)
            for cm1, reg, n_other in sides
        )
        for it in range(1, params.iterations + 1):
            _half_sweep(users_plan, x, y, params.cg_steps, pool)
            _half_sweep(items_plan, y, x, params.cg_steps, pool)
            loss = None
            if compute_loss and fused:  # in the pool's workers: denormals are flushed there
                groups = users_plan.groups
                loss = als_fused.objective(users_plan.rows, x, y, item_reg, groups, pool)
            elif compute_loss:  # in a worker too: factors near zero make denormals in eq. 3
                loss = in_pool(pool, lambda: _objective(cm1_users, x, y, user_reg, item_reg))
            losses += _after_iteration(it, params, progress, x, y, loss, pool, threads)
    return ALSModel(user_factors=x, item_factors=y, losses=losses, params=params)


def resolve_kernel(kernel: Kernel, device: torch.device) -> Literal["fused", "batched"]:
    """The kernel ``kernel`` names on ``device`` (see :data:`Kernel`); refuses fused off CPU."""
    if kernel not in ("auto", "fused", "batched"):
        raise InvalidInput(f"unknown ALS kernel {kernel!r}: use auto, fused or batched")
    if kernel == "auto":
        return "fused" if device.type == "cpu" and als_fused.available() else "batched"
    if kernel == "fused" and device.type != "cpu":
        raise InvalidInput(f"the fused ALS kernel runs on CPU only, not {device.type}")
    if kernel == "fused" and not als_fused.available():
        raise InvalidInput("the fused ALS kernel needs numba: pip install numba")
    return kernel


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


# --------------------------------------------------------------------------------------------
# Fold-in


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
    idx, cm1, y_m, a = _fold_in_system(item_factors, item_indices, weights, params, yty)
    if idx.numel() == 0:
        return torch.zeros(item_factors.shape[1], dtype=a.dtype, device=a.device)
    b = (cm1 + 1.0) @ y_m
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:  # singular without regularisation: fall back to least squares
        return torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1)
    return torch.cholesky_solve(b.unsqueeze(1), chol).squeeze(1)


def _fold_in_system(
    item_factors: torch.Tensor,
    item_indices: torch.Tensor,
    weights: torch.Tensor,
    params: ALSParams,
    yty: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The eq. 4 system of one user: ``(idx, cm1, y_m, a)`` with ``idx`` (m',) the distinct
    past items (duplicate weights summed), ``cm1`` (m',) their ``c_uj - 1``, ``y_m`` (m', k) their
    factors and ``a = Y^T C^u Y + lambda_u I`` (k, k). No interactions: ``idx`` is empty."""
    dev, dtype = item_factors.device, item_factors.dtype
    idx = torch.as_tensor(item_indices, dtype=torch.int64, device=dev)
    w = torch.as_tensor(weights, dtype=dtype, device=dev)
    if idx.shape != w.shape:
        raise InvalidInput("item_indices and weights must have the same length")
    if yty is None:
        yty = gramian(item_factors)
    idx, inverse = torch.unique(idx, return_inverse=True)
    w = torch.zeros(idx.numel(), dtype=dtype, device=dev).index_add_(0, inverse, w)
    cm1 = _confidence_minus_one(w, params)
    y_m = item_factors.index_select(0, idx)
    lam = params.regularization * float(idx.numel()) ** params.frequency_exponent
    a = yty + (y_m.T * cm1) @ y_m
    a.diagonal().add_(lam)
    return idx, cm1, y_m, a


def explain_scores(
    item_factors: torch.Tensor,
    item_indices: torch.Tensor,
    weights: torch.Tensor,
    params: ALSParams,
    targets: torch.Tensor,
    *,
    yty: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Why a user is recommended ``targets``: Hu, Koren & Volinsky 2008, section 5.

    With ``W^u = (Y^T C^u Y + lambda_u I)^-1`` (the matrix of eq. 4, as in :func:`fold_in_user`)
    the fold-in score is a weighted sum over the user's past items (the paper's eq. 7 and 8):

        p_ui = y_i^T x_u = sum_{j: r_uj > 0} s^u_ij c_uj,    s^u_ij = y_i^T W^u y_j

    ``item_indices``, ``weights``: the user's interactions (m,), duplicates summed, as in
    :func:`fold_in_user`; ``targets``: (t,) item rows to explain. Returns ``(past, contrib)``:
    ``past`` (m',) the distinct past items, ``contrib`` (t, m') ``s^u_ij c_uj``; a row sums to
    the fold-in score of its target. No interactions: ``past`` and ``contrib`` have no columns.
    """
    tgt = torch.as_tensor(targets, dtype=torch.int64, device=item_factors.device)
    idx, cm1, y_m, a = _fold_in_system(item_factors, item_indices, weights, params, yty)
    if idx.numel() == 0:
        return idx, torch.zeros(tgt.numel(), 0, dtype=a.dtype, device=a.device)
    y_t = item_factors.index_select(0, tgt)  # (t, k)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:  # singular without regularisation: least squares, as the fold-in
        w_y = torch.linalg.lstsq(a, y_t.T).solution
    else:
        w_y = torch.cholesky_solve(y_t.T.contiguous(), chol)  # (k, t) = W^u y_i (W^u symmetric)
    return idx, (w_y.T @ y_m.T) * (cm1 + 1.0)  # (t, m') s^u_ij c_uj


def contribution_shares(contrib: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` largest contributions of each row of ``contrib`` (t, m) (from
    :func:`explain_scores`) as shares of the row's total absolute contribution, so the shares of a
    row sum to at most 1 (1 when every past item pulls the score up). Returns ``(columns, shares)``
    (t, min(top, m)), largest first; a row of zeros gets shares 0."""
    n = min(top, contrib.shape[1])
    values, columns = torch.topk(contrib, n, dim=1)
    total = contrib.abs().sum(dim=1, keepdim=True)
    return columns, torch.where(total > 0, values / total.clamp_min(1e-30), 0.0)
