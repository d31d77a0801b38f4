"""The score explanation (Hu, Koren & Volinsky 2008, section 5) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from Prod.common.als import (
    ALSParams,
    build_user_items,
    confidence_matrix,
    contribution_shares,
    explain_scores,
    fit_als,
    fold_in_user,
)
from Prod.common.errors import InvalidInput


def _small_model(rng: np.random.Generator, params: ALSParams, n_users=15, n_items=11):
    mask = rng.random((n_users, n_items)) < 0.4
    users, items = np.nonzero(mask)
    weights = rng.integers(1, 6, size=users.size).astype(np.float32)
    ui = build_user_items(
        torch.tensor(users), torch.tensor(items), torch.tensor(weights), n_users, n_items
    )
    return ui, fit_als(ui, params)


def _brute_force(y: torch.Tensor, c_row: torch.Tensor, lam: float) -> torch.Tensor:
    """(n_items, n_items) ``s_ij c_uj`` from the dense inverse, one pair at a time (float64)."""
    y = y.double()
    c = c_row.double()
    k = y.shape[1]
    w_u = torch.linalg.inv(y.T @ torch.diag(c) @ y + lam * torch.eye(k, dtype=torch.float64))
    n = y.shape[0]
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            out[i, j] = (y[i] @ w_u @ y[j]) * c[j]
    return out


@pytest.mark.parametrize("confidence", ["linear", "log"])
@pytest.mark.parametrize("frequency_exponent", [0.0, 1.0])
def test_contributions_match_brute_force_and_sum_to_the_fold_in_score(
    rng, confidence, frequency_exponent
):
    params = ALSParams(
        factors=4,
        iterations=6,
        regularization=0.1,
        alpha=3.0,
        confidence=confidence,
        frequency_exponent=frequency_exponent,
    )
    ui, model = _small_model(rng, params)
    dense_c = confidence_matrix(ui, params).to_dense() + 1.0
    y = model.item_factors
    checked = 0
    for u in range(ui.shape[0]):
        row = ui.to_dense()[u]
        past = torch.nonzero(row).squeeze(1)
        if past.numel() < 2:
            continue
        targets = torch.arange(y.shape[0])
        got_past, contrib = explain_scores(y, past, row[past], params, targets)
        assert got_past.tolist() == past.tolist()
        lam = params.regularization * past.numel() ** frequency_exponent
        expected = _brute_force(y, dense_c[u], lam)[:, past]
        torch.testing.assert_close(contrib.double(), expected, rtol=1e-3, atol=1e-5)
        # eq. 7: the contributions add up to the fold-in score y_i^T x_u
        x_u = fold_in_user(y, past, row[past], params)
        torch.testing.assert_close(contrib.sum(1), y @ x_u, rtol=1e-3, atol=1e-5)
        # shares: the largest contributions over the row's absolute total, summing to <= 1
        columns, shares = contribution_shares(contrib, top=3)
        assert shares.shape == (y.shape[0], min(3, past.numel()))
        assert bool((shares.sum(1) <= 1 + 1e-6).all())
        brute_abs = expected.abs().sum(1)
        for i in range(y.shape[0]):
            best = torch.sort(expected[i], descending=True).values[: shares.shape[1]]
            torch.testing.assert_close(
                shares[i].double(), best / brute_abs[i], rtol=1e-3, atol=1e-5
            )
            assert expected[i, columns[i]].tolist() == pytest.approx(best.tolist(), rel=1e-3)
        checked += 1
    assert checked >= 5


def test_duplicates_are_summed_like_the_fold_in(rng):
    params = ALSParams(factors=3, iterations=4, regularization=0.2, alpha=2.0)
    _, model = _small_model(rng, params)
    y = model.item_factors
    targets = torch.tensor([0, 5, 9])
    past, contrib = explain_scores(
        y, torch.tensor([4, 2, 4]), torch.tensor([1.0, 2.0, 3.0]), params, targets
    )
    once_past, once = explain_scores(
        y, torch.tensor([2, 4]), torch.tensor([2.0, 4.0]), params, targets
    )
    assert past.tolist() == once_past.tolist() == [2, 4]
    torch.testing.assert_close(contrib, once)


def test_a_user_without_interactions_has_nothing_to_explain(rng):
    params = ALSParams(factors=3, iterations=2)
    _, model = _small_model(rng, params)
    none = torch.tensor([], dtype=torch.long)
    past, contrib = explain_scores(
        model.item_factors, none, torch.tensor([]), params, torch.tensor([1, 2])
    )
    assert past.numel() == 0 and contrib.shape == (2, 0)
    columns, shares = contribution_shares(contrib, top=3)
    assert columns.shape == shares.shape == (2, 0)
    with pytest.raises(InvalidInput):
        explain_scores(
            model.item_factors, torch.tensor([1]), torch.tensor([]), params, torch.tensor([1])
        )
