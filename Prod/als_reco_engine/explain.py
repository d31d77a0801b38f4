"""Why an item is recommended: the user's past items that contributed most to its score, by
Hu, Koren & Volinsky 2008, section 5 (:func:`Prod.common.als.explain_scores`), with their share
of the score's total absolute contribution (:func:`Prod.common.als.contribution_shares`)."""

from __future__ import annotations

import numpy as np
import torch

from Prod.als_reco_engine.foldin import params_from_meta
from Prod.als_reco_engine.index import ItemIndex
from Prod.als_reco_engine.profiles import UserProfile
from Prod.common.als import contribution_shares, explain_scores

TOP_CONTRIBUTORS = 3  # past items named per recommended item
_SHARE_DECIMALS = 4


def explain_rows(
    index: ItemIndex, profile: UserProfile, rows: np.ndarray, top: int = TOP_CONTRIBUTORS
) -> list[list[dict]]:
    """Per row of ``index`` in ``rows``: up to ``top`` of the user's liked items pulling its
    score up, best first, as ``{"item_id", "title", "share"}`` (shares sum to at most 1)."""
    if rows.size == 0:
        return []
    liked = profile.rows_for(index.catalogue)
    past, contrib = explain_scores(
        torch.from_numpy(index.factors),
        torch.from_numpy(liked.liked),
        torch.from_numpy(liked.weights),
        params_from_meta(index.meta),
        torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)),
        yty=torch.from_numpy(index.gramian),
    )
    columns, shares = contribution_shares(contrib, top)
    catalogue = index.catalogue
    past_rows = past.tolist()
    out = []
    for cols, values in zip(columns.tolist(), shares.tolist(), strict=True):
        out.append(
            [
                {
                    "item_id": catalogue.item_ids[past_rows[c]],
                    "title": catalogue.titles[past_rows[c]],
                    "share": round(v, _SHARE_DECIMALS),
                }
                for c, v in zip(cols, values, strict=True)
                if v > 0  # a past item pulling the score down explains nothing
            ]
        )
    return out
