"""The recommenders compared offline: the project's ALS, a popularity baseline, ``implicit`` ALS.

Each ``fit_*`` takes the training CSR (n_users, n_items) and returns a scorer
``scores(user_batch (b,) int64) -> (b, n_items) float32``; ranking and metrics happen elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from Prod.common.als import ALSModel, ALSParams, confidence_matrix, fit_als
from Prod.common.errors import InvalidInput

Scorer = Callable[[torch.Tensor], torch.Tensor]


def als_scorer(model: ALSModel) -> Scorer:
    user_factors, item_factors = model.user_factors.cpu(), model.item_factors.cpu()
    return lambda users: user_factors[users] @ item_factors.T


def fit_project_als(user_items: torch.Tensor, params: ALSParams, device=None) -> Scorer:
    return als_scorer(fit_als(user_items, params, device=device, compute_loss=False))


def fit_popularity(user_items: torch.Tensor) -> Scorer:
    """Score = number of training users of the item (the same list for everyone)."""
    counts = torch.bincount(user_items.col_indices(), minlength=user_items.shape[1]).float()
    return lambda users: counts.expand(len(users), -1)


def _one_blas_thread():
    """implicit parallelises over users itself; a BLAS thread pool inside that oversubscribes."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, "blas")


def _require_implicit():
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's own advice; it warns otherwise
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError:
        raise InvalidInput(
            "the `implicit` library is not installed; it is a development dependency: "
            "pip install -e '.[dev]' (or pip install implicit)"
        ) from None
    return AlternatingLeastSquares


def implicit_matrix(user_items: torch.Tensor, params: ALSParams):
    """scipy CSR whose values are the full confidence ``c_ui`` (implicit uses c = its input).

    ``implicit`` builds ``A = YtY + sum (c - 1) y y^T`` and ``b = sum c y`` straight from the
    matrix values, so feeding ``1 + alpha * w`` (or the log form) gives it our eq. 2 / eq. 6.
    """
    import scipy.sparse as sp

    cm1 = confidence_matrix(user_items, params)
    return sp.csr_matrix(
        ((cm1.values() + 1.0).numpy(), cm1.col_indices().numpy(), cm1.crow_indices().numpy()),
        shape=tuple(user_items.shape),
    )


def fit_implicit(
    user_items: torch.Tensor, params: ALSParams, num_threads: int = 0
) -> tuple[Scorer, object]:
    """``implicit``'s CPU CG ALS on the same confidences; returns (scorer, model)."""
    als_cls = _require_implicit()
    model = als_cls(
        factors=params.factors,
        regularization=params.regularization,
        alpha=1.0,
        iterations=params.iterations,
        use_cg=True,
        calculate_training_loss=False,
        num_threads=num_threads,
        random_state=params.seed,
    )
    model.cg_steps = params.cg_steps
    matrix = implicit_matrix(user_items, params)
    with _one_blas_thread():
        model.fit(matrix, show_progress=False)
    user_factors = torch.from_numpy(np.asarray(model.user_factors, dtype=np.float32))
    item_factors = torch.from_numpy(np.asarray(model.item_factors, dtype=np.float32))
    return (lambda users: user_factors[users] @ item_factors.T), model
