"""The fused CPU kernel (Prod/common/als_fused.py) against the batched kernel and the dense
closed form of eq. 4, and the choice between the two kernels."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from Prod.common import als_fused
from Prod.common.als import (
    ALSParams,
    _cg_sweep,
    _objective,
    _reference_solve,
    _regularization_per_row,
    _transpose_csr,
    build_user_items,
    confidence_matrix,
    fit_als,
    gramian,
    resolve_kernel,
)
from Prod.common.als_cpu import SweepPlan
from Prod.common.errors import InvalidInput

pytestmark = pytest.mark.skipif(not als_fused.available(), reason="numba is not installed")


def _ragged_matrix(rng: np.random.Generator, n_users: int, n_items: int) -> torch.Tensor:
    """Rows of every length from 0 to ``n_items`` (empty rows, and every remainder of the
    kernel's eight-at-a-time loop), weights 1-5."""
    users, items = [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=u % (n_items + 1), replace=False)
        users += [u] * chosen.size
        items += chosen.tolist()
    weights = rng.integers(1, 6, size=len(users)).astype(np.float32)
    return build_user_items(
        torch.tensor(users), torch.tensor(items), torch.tensor(weights), n_users, n_items
    )


def _inputs(rng, factors: int, confidence: str = "linear", frequency_exponent: float = 0.5):
    params = ALSParams(
        factors=factors,
        alpha=3.0,
        regularization=0.1,
        confidence=confidence,
        frequency_exponent=frequency_exponent,
    )
    ui = _ragged_matrix(rng, 90, 21)
    cm1 = confidence_matrix(ui, params)
    reg = _regularization_per_row(cm1, params)
    items = torch.tensor(rng.normal(size=(21, factors)), dtype=torch.float32)
    start = torch.tensor(rng.normal(size=(90, factors)), dtype=torch.float32)
    return ui, params, cm1, reg, items, start


def _exact(ui, params, items, reg):
    cm1 = confidence_matrix(ui, params).to_dense()
    return _reference_solve(cm1 + 1.0, (ui.to_dense() > 0).float(), items, reg)


@pytest.mark.parametrize("factors", [5, 16, 19])
@pytest.mark.parametrize(("confidence", "frequency_exponent"), [("linear", 0.0), ("log", 1.0)])
def test_fused_sweep_matches_the_batched_one_and_the_closed_form(
    rng, factors, confidence, frequency_exponent
):
    ui, params, cm1, reg, items, start = _inputs(rng, factors, confidence, frequency_exponent)
    fused_plan = SweepPlan(cm1, reg, num_threads=2, min_nnz_per_thread=1, fused=True)
    batched_plan = SweepPlan(cm1, reg, num_threads=2, min_nnz_per_thread=1)
    for steps in (1, 3):
        fused = _cg_sweep(fused_plan, start.clone(), items, reg, cg_steps=steps)
        batched = _cg_sweep(batched_plan, start.clone(), items, reg, cg_steps=steps)
        torch.testing.assert_close(fused, batched, rtol=1e-4, atol=1e-5)
    converged = _cg_sweep(fused_plan, start.clone(), items, reg, cg_steps=3 * factors)
    torch.testing.assert_close(converged, _exact(ui, params, items, reg), rtol=1e-3, atol=1e-4)


def test_fused_rows_do_not_depend_on_the_grouping(rng):
    # a row's CG runs alone in the fused kernel; only the rotations in and out of the eigenbasis
    # (matrix products over a group) may round differently for groups of other sizes
    _, _, cm1, reg, items, start = _inputs(rng, 8)
    plans = [
        SweepPlan(cm1, reg, num_threads=threads, min_nnz_per_thread=1, fused=True)
        for threads in (1, 3)
    ]
    assert len(plans[0].groups) < len(plans[1].groups)
    for plan in plans:
        assert [r for g in plan.groups for r in range(g.start, g.stop)] == list(range(90))
    one, three = (_cg_sweep(plan, start.clone(), items, reg, cg_steps=3) for plan in plans)
    torch.testing.assert_close(one, three, rtol=1e-5, atol=1e-5)


def test_a_converged_row_is_left_where_it_is(rng):
    ui, params, cm1, reg, items, _ = _inputs(rng, 6)
    exact = _exact(ui, params, items, reg)
    plan = SweepPlan(cm1, reg, num_threads=1, fused=True)
    again = _cg_sweep(plan, exact.clone(), items, reg, cg_steps=3)
    torch.testing.assert_close(again, exact, rtol=1e-4, atol=1e-5)
    # an empty row's solution is the zero vector
    empty = [u for u in range(90) if int(cm1.crow_indices()[u + 1] - cm1.crow_indices()[u]) == 0]
    assert empty and float(again[empty].abs().max()) < 1e-5


def test_eigenbasis_diagonalises_the_gramian(rng):
    # more rows than one chunk, so Y^T Y and Y Q are assembled from several, in a pool
    other = torch.tensor(rng.normal(size=(als_fused._CHUNK_ROWS + 7, 12)), dtype=torch.float32)
    yty = gramian(other)
    with ThreadPoolExecutor(2) as pool:
        basis = als_fused.Eigenbasis(other, pool)
    # the gramian summed in float64 over chunks, its eigenvectors from float64: orthonormal to
    # float32 rounding
    exact = other.double().T @ other.double()
    chunked = als_fused.gramian_in_chunks(other)
    assert chunked.dtype == torch.float64
    torch.testing.assert_close(chunked, exact, rtol=1e-6, atol=1e-3)
    q = basis.q
    torch.testing.assert_close(q.T @ q, torch.eye(12), rtol=0, atol=5e-7)
    rebuilt = q @ torch.diag(torch.from_numpy(basis.eigenvalues)) @ q.T
    torch.testing.assert_close(rebuilt, yty, rtol=1e-4, atol=1e-1)  # entries ~6.5e4
    torch.testing.assert_close(basis.rotated, other @ q)


@pytest.mark.parametrize("frequency_exponent", [0.0, 1.0])
def test_fused_objective_matches_the_float64_one(rng, frequency_exponent):
    ui, params, cm1, reg, items, users = _inputs(rng, 7, frequency_exponent=frequency_exponent)
    items_cm1 = confidence_matrix(ui, params).to_dense().T.to_sparse_csr()
    item_reg = _regularization_per_row(items_cm1, params)
    expected = _objective(cm1, users, items, reg, item_reg)
    plan = SweepPlan(cm1, reg, num_threads=3, min_nnz_per_thread=1, fused=True)
    with ThreadPoolExecutor(2) as pool:
        for executor in (None, pool):
            got = als_fused.objective(plan.rows, users, items, item_reg, plan.groups, executor)
            assert got == pytest.approx(expected, rel=1e-6)


def test_fits_with_either_kernel_agree(rng):
    ui = _ragged_matrix(rng, 300, 60)
    params = ALSParams(factors=10, iterations=4, regularization=0.1, alpha=2.0)
    fused = fit_als(ui, params, num_threads=2, kernel="fused")
    batched = fit_als(ui, params, num_threads=2, kernel="batched")
    # the first sweeps are ill-conditioned: float rounding moves a few factors by ~1e-4
    torch.testing.assert_close(fused.user_factors, batched.user_factors, rtol=0, atol=1e-3)
    torch.testing.assert_close(fused.item_factors, batched.item_factors, rtol=0, atol=1e-3)
    torch.testing.assert_close(
        torch.tensor(fused.losses), torch.tensor(batched.losses), rtol=1e-5, atol=0
    )
    assert fused.losses == sorted(fused.losses, reverse=True)


def test_counting_sort_transpose_equals_the_sorted_one_and_the_dense_transpose(rng):
    # ragged rows (some empty) and, past column 21, empty columns
    ui = confidence_matrix(_ragged_matrix(rng, 40, 21), ALSParams())
    ui = torch.sparse_csr_tensor(
        ui.crow_indices(), ui.col_indices(), ui.values(), (40, 30), check_invariants=False
    )
    counted, sorted_ = als_fused.transpose_csr(ui), _transpose_csr(ui)
    for part in ("crow_indices", "col_indices", "values"):
        assert torch.equal(getattr(counted, part)(), getattr(sorted_, part)())
    assert counted.shape == (30, 40) and torch.equal(counted.to_dense(), ui.to_dense().T)


def test_kernel_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_kernel("auto", cpu) == "fused"
    assert resolve_kernel("auto", cuda) == "batched"
    assert resolve_kernel("batched", cpu) == "batched"
    with pytest.raises(InvalidInput, match="CPU only"):
        resolve_kernel("fused", cuda)
    with pytest.raises(InvalidInput, match="unknown ALS kernel 'fast'"):
        resolve_kernel("fast", cpu)
