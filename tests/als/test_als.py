"""ALS math: fast CG solver against the dense closed form (eq. 4), objective, fold-in, params."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from Prod.common.als import (
    ALSParams,
    _cg_sweep,
    _objective,
    _reference_solve,
    _regularization_per_row,
    build_user_items,
    confidence_matrix,
    fit_als,
    fold_in_user,
    gramian,
)
from Prod.common.als_cpu import SweepPlan, all_finite, should_stream
from Prod.common.errors import InvalidInput, TrainingError


def _random_matrix(rng: np.random.Generator, n_users=12, n_items=9, density=0.35):
    mask = rng.random((n_users, n_items)) < density
    users, items = np.nonzero(mask)
    weights = rng.integers(1, 6, size=users.size).astype(np.float32)
    return build_user_items(
        torch.tensor(users), torch.tensor(items), torch.tensor(weights), n_users, n_items
    )


def _dense_confidence(user_items: torch.Tensor, params: ALSParams):
    cm1 = confidence_matrix(user_items, params).to_dense()
    return cm1 + 1.0, (user_items.to_dense() > 0).float()


def test_build_user_items_sums_duplicates():
    ui = build_user_items(
        torch.tensor([0, 0, 1, 0]),
        torch.tensor([2, 2, 0, 1]),
        torch.tensor([1.0, 3.0, 2.0, 5.0]),
        2,
        3,
    )
    assert ui.layout == torch.sparse_csr
    assert ui.to_dense().tolist() == [[0.0, 5.0, 4.0], [2.0, 0.0, 0.0]]


def test_build_user_items_rejects_bad_input():
    with pytest.raises(InvalidInput):
        build_user_items(torch.tensor([0]), torch.tensor([5]), torch.tensor([1.0]), 1, 3)
    with pytest.raises(InvalidInput):
        build_user_items(torch.tensor([0]), torch.tensor([0]), torch.tensor([-1.0]), 1, 3)


@pytest.mark.parametrize("confidence", ["linear", "log"])
@pytest.mark.parametrize("frequency_exponent", [0.0, 1.0])
def test_cg_sweep_converges_to_dense_closed_form(rng, confidence, frequency_exponent):
    params = ALSParams(
        factors=4,
        alpha=3.0,
        regularization=0.1,
        confidence=confidence,
        frequency_exponent=frequency_exponent,
    )
    ui = _random_matrix(rng)
    cm1 = confidence_matrix(ui, params)
    reg = _regularization_per_row(cm1, params)
    items = torch.tensor(rng.normal(size=(ui.shape[1], 4)), dtype=torch.float32)
    start = torch.tensor(rng.normal(size=(ui.shape[0], 4)), dtype=torch.float32)
    # CG solves a k-dimensional SPD system exactly in at most k steps (exact arithmetic)
    fast = _cg_sweep(cm1, start.clone(), items, reg, cg_steps=12)
    conf, pref = _dense_confidence(ui, params)
    expected = _reference_solve(conf, pref, items, reg)
    torch.testing.assert_close(fast, expected, rtol=1e-3, atol=1e-4)


def test_few_cg_steps_reduce_the_residual_from_a_warm_start(rng):
    params = ALSParams(factors=6, alpha=5.0, regularization=0.1)
    ui = _random_matrix(rng, 20, 15)
    cm1 = confidence_matrix(ui, params)
    reg = _regularization_per_row(cm1, params)
    items = torch.tensor(rng.normal(size=(15, 6)), dtype=torch.float32)
    start = torch.zeros(20, 6)
    conf, pref = _dense_confidence(ui, params)
    exact = _reference_solve(conf, pref, items, reg)
    one = _cg_sweep(cm1, start.clone(), items, reg, cg_steps=1)
    three = _cg_sweep(cm1, start.clone(), items, reg, cg_steps=3)
    assert (three - exact).norm() < (one - exact).norm() < (start - exact).norm()


def test_objective_matches_dense_eq3(rng):
    params = ALSParams(factors=3, alpha=2.0, regularization=0.3, frequency_exponent=0.5)
    ui = _random_matrix(rng)
    cm1 = confidence_matrix(ui, params)
    cm1_t = cm1.t().to_sparse_csr()
    user_reg, item_reg = (
        _regularization_per_row(cm1, params),
        _regularization_per_row(cm1_t, params),
    )
    x = torch.tensor(rng.normal(size=(ui.shape[0], 3)), dtype=torch.float32)
    y = torch.tensor(rng.normal(size=(ui.shape[1], 3)), dtype=torch.float32)
    conf, pref = _dense_confidence(ui, params)
    dense = (
        (conf * (pref - x @ y.T) ** 2).sum()
        + (user_reg * (x**2).sum(1)).sum()
        + (item_reg * (y**2).sum(1)).sum()
    )
    assert _objective(cm1, x, y, user_reg, item_reg) == pytest.approx(float(dense), rel=1e-4)


def test_training_decreases_the_objective_and_is_reproducible(rng):
    ui = _random_matrix(rng, 40, 30, 0.2)
    params = ALSParams(factors=8, iterations=6, regularization=0.05, alpha=4.0, seed=7)
    seen = []
    model = fit_als(ui, params, progress=lambda i, n, loss: seen.append((i, n)))
    assert seen == [(i, 6) for i in range(1, 7)]
    assert len(model.losses) == 6
    assert all(b <= a * (1 + 1e-5) for a, b in zip(model.losses, model.losses[1:], strict=False))
    assert model.losses[-1] < model.losses[0]
    again = fit_als(ui, params)
    assert torch.equal(model.user_factors, again.user_factors)
    assert torch.equal(model.item_factors, again.item_factors)
    assert model.user_factors.shape == (40, 8) and model.item_factors.shape == (30, 8)
    assert model.user_factors.dtype == torch.float32


def test_fitted_model_ranks_held_interactions_above_random(rng):
    # two blocks of users/items: a user should prefer the unseen items of its own block
    users, items = [], []
    for u in range(40):
        block = u % 2
        chosen = rng.choice(10, size=6, replace=False) + 10 * block
        users += [u] * 6
        items += chosen.tolist()
    ui = build_user_items(torch.tensor(users), torch.tensor(items), torch.ones(len(users)), 40, 20)
    model = fit_als(ui, ALSParams(factors=4, iterations=8, regularization=0.1, alpha=5.0))
    scores = model.user_factors @ model.item_factors.T
    own = torch.stack([scores[u, 10 * (u % 2) : 10 * (u % 2) + 10].mean() for u in range(40)])
    other = torch.stack(
        [scores[u, 10 * (1 - u % 2) : 10 * (1 - u % 2) + 10].mean() for u in range(40)]
    )
    assert bool((own > other).all())


def test_warm_start_continues_a_fit_exactly(rng):
    # a fit's whole state is its two factor tables: 2 iterations, then 2 more from there, are the
    # same computation as 4 iterations (the trainer finishes its holdout fit this way)
    ui = _random_matrix(rng, 30, 20, 0.3)
    params = ALSParams(factors=6, iterations=4, regularization=0.1, alpha=2.0, seed=5)
    whole = fit_als(ui, params)
    half = ALSParams(factors=6, iterations=2, regularization=0.1, alpha=2.0, seed=5)
    first = fit_als(ui, half)
    second = fit_als(ui, half, user_factors=first.user_factors, item_factors=first.item_factors)
    torch.testing.assert_close(second.user_factors, whole.user_factors, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second.item_factors, whole.item_factors, rtol=1e-5, atol=1e-6)
    assert first.losses + second.losses == pytest.approx(whole.losses, rel=1e-6)
    assert not torch.equal(first.user_factors, second.user_factors)  # the start was copied


def test_warm_start_factors_of_the_wrong_shape_are_refused(rng):
    ui = _random_matrix(rng)
    with pytest.raises(InvalidInput, match="shape"):
        fit_als(ui, ALSParams(factors=4, iterations=1), user_factors=torch.zeros(3, 4))


def test_non_finite_factors_raise_training_error(rng):
    ui = _random_matrix(rng)
    bad_items = torch.full((ui.shape[1], 4), float("nan"))
    with pytest.raises(TrainingError):
        fit_als(ui, ALSParams(factors=4, iterations=1), item_factors=bad_items)


def test_fold_in_reproduces_a_trained_user(rng):
    ui = _random_matrix(rng, 30, 25, 0.3)
    # many CG steps make each half sweep exact, so the user sweep after the last item sweep is
    # eq. 4 given the final items, exactly what fold-in computes
    params = ALSParams(
        factors=5,
        iterations=100,
        regularization=0.1,
        alpha=3.0,
        cg_steps=10,
        frequency_exponent=0.5,
    )
    model = fit_als(ui, params, compute_loss=False)
    yty = gramian(model.item_factors)
    for u in (0, 7, 19):
        row = ui[u].to_dense()
        idx = torch.nonzero(row).squeeze(1)
        folded = fold_in_user(model.item_factors, idx, row[idx], params, yty=yty)
        trained = model.user_factors[u]
        assert float((folded - trained).norm() / trained.norm()) < 1e-2
        assert torch.allclose(
            folded, fold_in_user(model.item_factors, idx, row[idx], params), atol=1e-5
        )


def test_fold_in_matches_reference_and_sums_duplicates(rng):
    params = ALSParams(factors=4, alpha=2.0, regularization=0.2, confidence="log")
    items = torch.tensor(rng.normal(size=(10, 4)), dtype=torch.float32)
    folded = fold_in_user(items, torch.tensor([3, 1, 3]), torch.tensor([1.0, 2.0, 2.0]), params)
    ui = build_user_items(
        torch.tensor([0, 0]), torch.tensor([1, 3]), torch.tensor([2.0, 3.0]), 1, 10
    )
    conf, pref = _dense_confidence(ui, params)
    expected = _reference_solve(conf, pref, items, torch.tensor([0.2]))[0]
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(
        fold_in_user(items, torch.tensor([], dtype=torch.long), torch.tensor([]), params),
        torch.zeros(4),
    )


def test_params_round_trip_and_validation(tmp_path):
    params = ALSParams(factors=32, alpha=7.5, confidence="log", frequency_exponent=1.0)
    path = params.to_file(tmp_path / "p" / "als_params.json", dataset="demo")
    assert ALSParams.from_file(path) == params
    with pytest.raises(InvalidInput):
        ALSParams(factors=0)
    with pytest.raises(InvalidInput):
        ALSParams.from_dict({"factors": 8, "lamda": 0.1})
    with pytest.raises(InvalidInput):
        ALSParams.from_file(tmp_path / "missing.json")


@pytest.mark.gpu
def test_fit_on_cuda_matches_cpu(rng):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    ui = _random_matrix(rng, 30, 20, 0.3)
    params = ALSParams(factors=4, iterations=3)
    gpu = fit_als(ui, params, device="cuda")
    assert gpu.user_factors.device.type == "cuda"
    # the same kernel on both devices, then the CPU's default (fused, rounding differently)
    cpu = fit_als(ui, params, kernel="batched")
    torch.testing.assert_close(gpu.user_factors.cpu(), cpu.user_factors, rtol=1e-3, atol=1e-4)
    fused = fit_als(ui, params)
    torch.testing.assert_close(gpu.user_factors.cpu(), fused.user_factors, rtol=0, atol=1e-3)


# --------------------------------------------------------------------------------------------
# Row groups solved in parallel threads


def _sweep_inputs(rng, n_users, n_items, density, factors=6):
    params = ALSParams(factors=factors, alpha=3.0, regularization=0.1, frequency_exponent=0.5)
    ui = _random_matrix(rng, n_users, n_items, density)
    cm1 = confidence_matrix(ui, params)
    reg = _regularization_per_row(cm1, params)
    items = torch.tensor(rng.normal(size=(n_items, factors)), dtype=torch.float32)
    start = torch.tensor(rng.normal(size=(n_users, factors)), dtype=torch.float32)
    return ui, params, cm1, reg, items, start


def _assert_matches_then_converges(plan, reference, ui, params, reg, items, start):
    """Three CG steps of ``plan`` equal those of ``reference`` (a plan or the CSR, one group), and
    20 of them reach the dense closed form of eq. 4."""
    fast = _cg_sweep(plan, start.clone(), items, reg, cg_steps=3)
    torch.testing.assert_close(
        fast, _cg_sweep(reference, start.clone(), items, reg, cg_steps=3), rtol=1e-5, atol=1e-6
    )
    exact = _cg_sweep(plan, start.clone(), items, reg, cg_steps=20)
    conf, pref = _dense_confidence(ui, params)
    torch.testing.assert_close(
        exact, _reference_solve(conf, pref, items, reg), rtol=1e-3, atol=1e-4
    )


def test_sweep_plan_groups_cover_every_row_once_with_balanced_nnz(rng):
    ui, _, cm1, reg, _, _ = _sweep_inputs(rng, 60, 30, 0.3)
    plan = SweepPlan(cm1, reg, num_threads=3, min_nnz_per_thread=1)
    assert plan.num_threads == 3 and len(plan.groups) == 3
    covered = [row for g in plan.groups for row in range(g.start, g.stop)]
    assert covered == list(range(60))
    nnz = [g.nnz for g in plan.groups]
    assert sum(nnz) == ui._nnz() and max(nnz) - min(nnz) <= 2 * 30  # at most ~one row apart
    # more threads than rows, and an empty matrix: still every row exactly once
    tiny = confidence_matrix(_random_matrix(rng, 2, 5, 0.9), ALSParams())
    tiny = SweepPlan(
        tiny, _regularization_per_row(tiny, ALSParams()), num_threads=8, min_nnz_per_thread=1
    )
    assert [r for g in tiny.groups for r in range(g.start, g.stop)] == [0, 1]


def test_small_matrices_do_not_get_threads(rng):
    _, _, cm1, reg, _, _ = _sweep_inputs(rng, 20, 10, 0.3)
    assert SweepPlan(cm1, reg, num_threads=4).num_threads == 1


def test_threaded_sweep_matches_one_thread_and_the_closed_form(rng):
    ui, params, cm1, reg, items, start = _sweep_inputs(rng, 80, 25, 0.3)
    plan = SweepPlan(cm1, reg, num_threads=3, min_nnz_per_thread=1)
    _assert_matches_then_converges(plan, cm1, ui, params, reg, items, start)


def test_streamed_sweep_matches_the_direct_one_and_the_closed_form(rng):
    ui, params, cm1, reg, items, start = _sweep_inputs(rng, 80, 25, 0.3)
    plan = SweepPlan(cm1, reg, num_threads=2, min_nnz_per_thread=1, streamed=True, block_nnz=60)
    assert len(plan.groups) >= ui._nnz() // 60
    assert [r for g in plan.groups for r in range(g.start, g.stop)] == list(range(80))
    for group in plan.groups:  # each group copies the item row of each of its non-zeros, in order
        copied = group.gather_index
        assert torch.equal(copied, cm1.col_indices()[_nnz_range(cm1, group)])
        copy = group.source(items)
        assert torch.equal(copy, items[copied])
    _assert_matches_then_converges(plan, cm1, ui, params, reg, items, start)


@pytest.mark.parametrize("frequency_exponent", [0.0, 0.5])
def test_streamed_blocks_are_bounded_and_match_one_group_and_the_closed_form(
    rng, frequency_exponent
):
    # many small streamed blocks over two threads, with one lambda for all rows (folded into
    # Y^T Y once per sweep) or one per row
    params = ALSParams(
        factors=6, alpha=3.0, regularization=0.1, frequency_exponent=frequency_exponent
    )
    ui = _random_matrix(rng, 120, 30, 0.3)
    cm1 = confidence_matrix(ui, params)
    reg = _regularization_per_row(cm1, params)
    items = torch.tensor(rng.normal(size=(30, 6)), dtype=torch.float32)
    start = torch.tensor(rng.normal(size=(120, 6)), dtype=torch.float32)
    plan = SweepPlan(cm1, reg, num_threads=2, min_nnz_per_thread=1, streamed=True, block_nnz=50)
    assert len(plan.groups) >= ui._nnz() // 50
    assert [r for g in plan.groups for r in range(g.start, g.stop)] == list(range(120))
    widest = int((cm1.crow_indices()[1:] - cm1.crow_indices()[:-1]).max())
    assert max(g.nnz for g in plan.groups) <= 50 + widest  # a cut falls inside at most one row
    one = SweepPlan(cm1, reg, num_threads=1)  # read in place: one group
    assert len(one.groups) == 1 and one.groups[0].gather_index is None
    _assert_matches_then_converges(plan, one, ui, params, reg, items, start)


def test_all_finite_is_exact_at_the_float32_limits():
    big = torch.full((1000, 4), 3.0e38)  # finite, and their float32 sum would overflow
    assert all_finite(big) and all_finite(torch.empty(0, 4))
    with ThreadPoolExecutor(2) as pool:
        assert all_finite(big, pool, parts=3)
        small = torch.ones(1000, 4)  # whose sum does not overflow: the one-pass answer
        assert all_finite(small) and all_finite(small, pool, parts=3)
        for bad in (float("nan"), float("inf"), float("-inf")):
            for values in (big, small):
                t = values.clone()
                t[517, 2] = bad
                assert not all_finite(t)
                assert not all_finite(t, pool, parts=3)  # also checked in row chunks in a pool


def _nnz_range(cm1, group):
    crow = cm1.crow_indices()
    return slice(int(crow[group.start]), int(crow[group.stop]))


def test_streaming_is_chosen_by_the_size_of_the_other_sides_factors(rng):
    cpu = torch.device("cpu")
    assert should_stream(200_000, 64, cpu) and not should_stream(20_000, 64, cpu)
    assert not should_stream(200_000, 64, torch.device("cuda"))
    ui = _random_matrix(rng, 300, 40, 0.4)
    params = ALSParams(factors=8, iterations=3, regularization=0.1, alpha=2.0)
    streamed = fit_als(ui, params, num_threads=2, streamed=True, kernel="batched")
    direct = fit_als(ui, params, num_threads=2, streamed=False, kernel="batched")
    torch.testing.assert_close(streamed.user_factors, direct.user_factors, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(streamed.item_factors, direct.item_factors, rtol=1e-4, atol=1e-5)


def test_threaded_fit_matches_one_thread_and_restores_torch_threads(rng):
    # big enough (> 2 * 32k non-zeros) that the fit really uses two threads
    ui = _random_matrix(rng, 1200, 150, 0.4)
    params = ALSParams(factors=8, iterations=2, regularization=0.1, alpha=2.0)
    cm1 = confidence_matrix(ui, params)
    assert SweepPlan(cm1, _regularization_per_row(cm1, params), num_threads=2).num_threads == 2
    before = torch.get_num_threads()
    two = fit_als(ui, params, num_threads=2)
    assert torch.get_num_threads() == before
    one = fit_als(ui, params, num_threads=1)
    assert torch.get_num_threads() == before
    torch.testing.assert_close(two.user_factors, one.user_factors, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(two.item_factors, one.item_factors, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        torch.tensor(two.losses), torch.tensor(one.losses), rtol=1e-5, atol=0
    )


def test_denormal_flushing_stays_inside_the_fit(rng):
    # the solver flushes denormals in its own worker threads; the caller's thread keeps IEEE
    # semantics (a denormal times one is still a denormal, not zero)
    fit_als(_random_matrix(rng, 30, 20, 0.3), ALSParams(factors=4, iterations=2), num_threads=1)
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert float(tiny * 1.0) > 0.0
