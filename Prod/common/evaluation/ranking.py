"""Top-k item indices per user from factor scores, excluding items the user has already seen."""

from __future__ import annotations

import torch

__all__ = ["top_k_excluding_seen"]


def top_k_excluding_seen(
    scores_fn,
    users: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    batch_size: int = 2048,
) -> torch.Tensor:
    """(len(users), k) int64 item indices, best first; seen items are never returned.

    ``scores_fn(user_batch) -> (b, n_items)`` float scores; ``seen``: CSR (n_users, n_items) of
    training interactions. When a user has fewer than k unseen items the tail holds -1.
    """
    crow, col = seen.crow_indices(), seen.col_indices()
    out = []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = scores_fn(batch).clone()
        counts = crow[batch + 1] - crow[batch]
        rows = torch.repeat_interleave(torch.arange(len(batch)), counts)
        starts = torch.repeat_interleave(crow[batch], counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        scores[rows, col[starts + offsets]] = float("-inf")
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        idx = torch.where(torch.isinf(top.values) & (top.values < 0), -1, top.indices)
        out.append(idx)
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.int64)
