"""Eq. 4's CG one row at a time, compiled for the host CPU by numba: the *fused* CPU kernel.

Same math as :func:`Prod.common.als._solve_group` (warm-started CG on
``(Y^T Y + lambda_u I + Y^T (C^u - I) Y) x_u = Y^T C^u p(u)``, a row stopping once its squared
residual is below ``eps``), but a row's whole CG runs before the next row starts:

- its item factors are read from memory once per half sweep, then from cache at every CG step;
- its vectors (k floats each) stay in L1, and nothing is allocated per step;
- it works in the eigenbasis of ``Y^T Y`` (:class:`Eigenbasis`), where the dense term of every
  CG step is diagonal: k multiplications instead of a k x k product;
- the sparse products call no library: torch's CSR products go to MKL on x86, whose speed
  depends on the CPU vendor. The only library calls left are dense matrix products (the
  rotations in and out of the eigenbasis), which every BLAS does well.

The batched kernel (``als._solve_group``) stays for CUDA, and as the kernel checked against this
one in the tests. Compiled on the first call in a process (~2 s), and cached on disk by numba.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np
import torch

try:  # numba is a dependency; a build without it falls back to the batched kernel
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

__all__ = [
    "Eigenbasis",
    "FusedRows",
    "available",
    "gramian_in_chunks",
    "objective",
    "solve_rows",
    "transpose_csr",
]


def available() -> bool:
    """Whether the fused kernel can run here (numba imports)."""
    return numba is not None


class FusedRows:
    """One side of a fit as the kernel reads it: numpy views of the CSR ``c_ui - 1`` and
    ``lambda_u`` (no copies but int32 column indices), built once per fit."""

    def __init__(self, cm1: torch.Tensor, reg: torch.Tensor) -> None:
        self.indptr = cm1.crow_indices().numpy()
        self.indices = cm1.col_indices().to(torch.int32).numpy()
        self.cm1 = cm1.values().numpy()
        self.reg = reg.to(torch.float32).contiguous().numpy()


def _coefficient(cm1_j, dot, residual):
    """A non-zero's weight on ``y_j``: ``(c_j - 1) dot``, or with ``residual`` ``c_j - (c_j - 1)
    dot`` (``dot = y_j^T v``)."""
    scaled = cm1_j * dot
    return cm1_j + np.float32(1.0) - scaled if residual else scaled


def _add_sparse_part(indices, cm1, lo, hi, other, v, out, residual):
    """``out += sum_j coef_j y_j`` over non-zeros ``[lo, hi)`` of a row, ``coef_j = (c_j - 1)
    y_j^T v``, or with ``residual`` ``c_j - (c_j - 1) y_j^T v`` (the batched kernel's
    ``_add_sparse_part``). Eight non-zeros at a time, then one at a time: their dot products and
    item-row loads overlap instead of each waiting for the last (a 10M fit's half sweeps took
    ~10% less time than four at a time; one at a time was 1.5x slower at k=64)."""
    k = v.shape[0]
    j = lo
    while j + 8 <= hi:
        y0, y1 = other[indices[j]], other[indices[j + 1]]
        y2, y3 = other[indices[j + 2]], other[indices[j + 3]]
        y4, y5 = other[indices[j + 4]], other[indices[j + 5]]
        y6, y7 = other[indices[j + 6]], other[indices[j + 7]]
        d0 = d1 = d2 = d3 = d4 = d5 = d6 = d7 = np.float32(0.0)
        for a in range(k):
            va = v[a]
            d0 += y0[a] * va
            d1 += y1[a] * va
            d2 += y2[a] * va
            d3 += y3[a] * va
            d4 += y4[a] * va
            d5 += y5[a] * va
            d6 += y6[a] * va
            d7 += y7[a] * va
        c0, c1 = _coefficient(cm1[j], d0, residual), _coefficient(cm1[j + 1], d1, residual)
        c2, c3 = _coefficient(cm1[j + 2], d2, residual), _coefficient(cm1[j + 3], d3, residual)
        c4, c5 = _coefficient(cm1[j + 4], d4, residual), _coefficient(cm1[j + 5], d5, residual)
        c6, c7 = _coefficient(cm1[j + 6], d6, residual), _coefficient(cm1[j + 7], d7, residual)
        for a in range(k):
            out[a] += ((c0 * y0[a] + c1 * y1[a]) + (c2 * y2[a] + c3 * y3[a])) + (
                (c4 * y4[a] + c5 * y5[a]) + (c6 * y6[a] + c7 * y7[a])
            )
        j += 8
    while j < hi:
        yj = other[indices[j]]
        dot = np.float32(0.0)
        for a in range(k):
            dot += yj[a] * v[a]
        coef = _coefficient(cm1[j], dot, residual)
        for a in range(k):
            out[a] += coef * yj[a]
        j += 1


def _solve_rows(indptr, indices, cm1, reg, block, other, eigenvalues, start, cg_steps, eps):
    """CG on eq. 4 for rows ``[start, start + len(block))``, in the eigenbasis of ``Y^T Y``.

    ``block`` (b, k): the rows' factors rotated into that basis, updated in place; ``other``
    (m, k): Y rotated likewise; ``eigenvalues`` (k,): of ``Y^T Y``, so ``Y^T Y + lambda_u I`` is
    the diagonal ``eigenvalues + lambda_u``. Comments name the batched kernel's variables.
    """
    k = block.shape[1]
    r = np.empty(k, np.float32)
    p = np.empty(k, np.float32)
    ap = np.empty(k, np.float32)
    for row in range(block.shape[0]):
        u = start + row
        xu = block[row]
        lam = reg[u]
        lo, hi = indptr[u], indptr[u + 1]
        # start residual: b_u - A_u x_u = -(Y^T Y + lambda_u I) x_u + sum_i (c - (c-1) x^T y_i) y_i
        for a in range(k):
            r[a] = -(eigenvalues[a] + lam) * xu[a]
        _add_sparse_part(indices, cm1, lo, hi, other, xu, r, True)
        rs_old = np.float32(0.0)
        for a in range(k):
            p[a] = r[a]
            rs_old += r[a] * r[a]
        for step in range(cg_steps):
            if rs_old <= eps:  # converged (as the batched kernel's ``active``)
                break
            # ap = A_u p = (Y^T Y + lambda_u I) p + sum_i (c - 1) (y_i^T p) y_i
            for a in range(k):
                ap[a] = (eigenvalues[a] + lam) * p[a]
            _add_sparse_part(indices, cm1, lo, hi, other, p, ap, False)
            p_ap = np.float32(0.0)
            for a in range(k):
                p_ap += p[a] * ap[a]
            if p_ap <= 0:  # p = 0: nothing left to do for this row
                break
            step_size = rs_old / p_ap
            for a in range(k):
                xu[a] += step_size * p[a]
            if step == cg_steps - 1:
                break  # the next direction would not be used
            rs_new = np.float32(0.0)
            for a in range(k):
                r[a] -= step_size * ap[a]
                rs_new += r[a] * r[a]
            beta = rs_new / rs_old
            for a in range(k):
                p[a] = r[a] + beta * p[a]
            rs_old = rs_new


def _transpose(indptr, indices, values, t_indptr, t_rows, t_values):
    """Counting sort of a CSR's entries by column into ``t_*`` (``t_indptr`` zeroed, m + 1):
    stable, so each column's entries stay in row order."""
    for j in range(indices.shape[0]):
        t_indptr[indices[j] + 1] += 1
    for c in range(t_indptr.shape[0] - 1):
        t_indptr[c + 1] += t_indptr[c]
    fill = t_indptr[:-1].copy()
    for r in range(indptr.shape[0] - 1):
        for j in range(indptr[r], indptr[r + 1]):
            at = fill[indices[j]]
            t_rows[at] = r
            t_values[at] = values[j]
            fill[indices[j]] = at + 1


def _rows_loss(indptr, indices, cm1, reg, x, y, start, stop):
    """Eq. 3's terms of rows ``[start, stop)`` beyond the all-zero part: at each non-zero
    ``c (1 - s)^2 - s^2`` with ``s = x_u^T y_i``, plus ``lambda_u ||x_u||^2`` (float64 sums)."""
    k = x.shape[1]
    total = 0.0
    for u in range(start, stop):
        xu = x[u]
        norm = np.float32(0.0)
        for a in range(k):
            norm += xu[a] * xu[a]
        total += np.float64(reg[u]) * np.float64(norm)
        for j in range(indptr[u], indptr[u + 1]):
            yi = y[indices[j]]
            s = np.float32(0.0)
            for a in range(k):
                s += xu[a] * yi[a]
            s64 = np.float64(s)
            total += (np.float64(cm1[j]) + 1.0) * (1.0 - s64) ** 2 - s64 * s64
    return total


def _compile(fn):
    """``fn`` compiled: fastmath lets the dot products use vector registers (sums reassociated);
    the GIL is released, so the fit's thread pool runs row groups in parallel."""
    try:
        return numba.njit(nogil=True, fastmath=True, cache=True)(fn)
    except RuntimeError:  # no writable cache folder (read-only install): compile per process
        return numba.njit(nogil=True, fastmath=True)(fn)


if numba is not None:
    _coefficient = _compile(_coefficient)
    _add_sparse_part = _compile(_add_sparse_part)
    _solve_rows = _compile(_solve_rows)
    _transpose = _compile(_transpose)
    _rows_loss = _compile(_rows_loss)


def transpose_csr(csr: torch.Tensor) -> torch.Tensor:
    """The CSR of ``csr.T`` (CPU, int64 indices), equal to ``als._transpose_csr``'s: one
    counting-sort pass instead of a sort (10M non-zeros: 0.14 s against 0.43 s)."""
    n, m = csr.shape
    nnz = int(csr._nnz())
    t_crow = torch.zeros(m + 1, dtype=torch.int64)
    rows = torch.empty(nnz, dtype=torch.int64)
    values = torch.empty(nnz, dtype=csr.values().dtype)
    _transpose(
        csr.crow_indices().numpy(),
        csr.col_indices().numpy(),
        csr.values().numpy(),
        t_crow.numpy(),
        rows.numpy(),
        values.numpy(),
    )
    return torch.sparse_csr_tensor(t_crow, rows, values, (m, n), check_invariants=False)


_CHUNK_ROWS = 65_536  # rows per matrix-product task: fixed, so results do not depend on threads


def _in_chunks(n: int, fn: Callable[[slice], object], pool: Executor | None) -> list:
    """``fn(rows)`` for consecutive row slices of ``[0, n)``, in ``pool`` when given, in order."""
    parts = [slice(a, min(a + _CHUNK_ROWS, n)) for a in range(0, n, _CHUNK_ROWS)]
    if pool is None:
        return [fn(part) for part in parts]
    return [f.result() for f in [pool.submit(fn, part) for part in parts]]


def gramian_in_chunks(other: torch.Tensor, pool: Executor | None = None) -> torch.Tensor:
    """``Y^T Y`` (k, k) float64, summed over fixed row chunks of ``other`` run in ``pool``."""
    grams = _in_chunks(other.shape[0], lambda rows: (other[rows].T @ other[rows]).double(), pool)
    k = other.shape[1]
    return torch.stack(grams).sum(0) if grams else torch.zeros(k, k, dtype=torch.float64)


def objective(
    rows: FusedRows,
    x: torch.Tensor,
    y: torch.Tensor,
    item_reg: torch.Tensor,
    groups: list,
    pool: Executor | None = None,
) -> float:
    """Eq. 3 as ``als._objective`` computes it (``rows``: the users' side), in ``pool``: the
    all-zero part ``trace(X^T X Y^T Y)`` from chunked gramians, the non-zeros and the L2 terms
    row group by row group (at 10M, 1 s an iteration in one thread otherwise).
    ``groups``: row ranges of the users (a plan's groups)."""
    xn, yn = x.numpy(), y.numpy()

    def part(group) -> float:
        return _rows_loss(
            rows.indptr, rows.indices, rows.cm1, rows.reg, xn, yn, group.start, group.stop
        )

    if pool is None:
        parts = [part(group) for group in groups]
    else:
        parts = [f.result() for f in [pool.submit(part, group) for group in groups]]
    dense = torch.sum(gramian_in_chunks(x, pool) * gramian_in_chunks(y, pool))
    item_l2 = torch.dot(item_reg.double(), (y * y).sum(1).double())
    return float(dense + item_l2) + sum(parts)


class Eigenbasis:
    """``Y^T Y = Q diag(eigenvalues) Q^T`` of a half sweep's fixed side, and Y rotated by Q.

    CG is invariant under an orthogonal change of basis, so solving for ``Q^T x_u`` against
    ``Y Q`` gives the same iterates up to rounding, and the ``k x k`` product of every CG step
    becomes ``k`` multiplications: rotating each row in and out costs 2 ``k x k`` products in
    batched matrix products instead of ``cg_steps + 1`` matrix-vector products one row at a time.
    ``Y^T Y`` and ``Y Q`` are computed in row chunks in ``pool`` (at 10M, ~0.1 s an iteration
    on one thread otherwise).
    """

    def __init__(self, other: torch.Tensor, pool: Executor | None = None) -> None:
        n = other.shape[0]
        yty = gramian_in_chunks(other, pool)
        if bool(torch.isfinite(yty).all()):
            eigenvalues, q = torch.linalg.eigh(yty)  # float64: exact to float32 rounding
        else:  # eigh would raise: NaN factors out, which the fit's finiteness check reports
            eigenvalues, q = torch.full_like(yty[0], torch.nan), torch.full_like(yty, torch.nan)
        self.eigenvalues = eigenvalues.clamp_min(0.0).to(torch.float32).numpy()
        self.q = q.to(torch.float32)
        self.rotated = torch.empty_like(other)
        _in_chunks(n, lambda rows: torch.mm(other[rows], self.q, out=self.rotated[rows]), pool)


def solve_rows(
    rows: FusedRows,
    x: torch.Tensor,
    basis: Eigenbasis,
    start: int,
    stop: int,
    cg_steps: int,
    eps: float,
) -> None:
    """Eq. 4 by ``cg_steps`` CG steps for rows ``[start, stop)`` of ``x`` (n, k), in place.

    ``x`` is a contiguous float32 CPU tensor; ``basis`` the other side's :class:`Eigenbasis`.
    """
    block = x[start:stop] @ basis.q
    _solve_rows(
        rows.indptr,
        rows.indices,
        rows.cm1,
        rows.reg,
        block.numpy(),
        basis.rotated.numpy(),
        basis.eigenvalues,
        start,
        cg_steps,
        np.float32(eps),
    )
    torch.mm(block, basis.q.T, out=x[start:stop])
