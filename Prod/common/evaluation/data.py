"""Load a canonical ``interactions.csv`` and map ids to contiguous indices for the ALS math."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from Prod.common.als import build_user_items
from Prod.common.canonical_format import INTERACTIONS_FILE
from Prod.common.errors import InvalidInput

__all__ = ["IndexMaps", "load_interactions", "to_user_items", "seen_items"]


def load_interactions(dataset_dir: str | Path) -> pd.DataFrame:
    """``user_id``, ``item_id`` (str), ``weight`` (float32), ``timestamp`` (int64 unix seconds)."""
    path = Path(dataset_dir) / INTERACTIONS_FILE
    if not path.is_file():
        raise InvalidInput(f"no {INTERACTIONS_FILE} in {dataset_dir}")
    frame = pd.read_csv(
        path,
        usecols=["user_id", "item_id", "weight", "timestamp"],
        dtype={"user_id": str, "item_id": str, "weight": np.float32, "timestamp": str},
    )
    if frame.empty:
        raise InvalidInput(f"{path} holds no interactions")
    stamps = frame["timestamp"]
    if stamps.str.fullmatch(r"-?\d+").all():
        seconds = stamps.astype(np.int64)
    else:
        parsed = pd.to_datetime(stamps, utc=True, format="ISO8601")
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    frame["timestamp"] = seconds.astype(np.int64)
    if (frame["weight"] <= 0).any() or frame["weight"].isna().any():
        raise InvalidInput(f"{path}: weights must be > 0")
    return frame


@dataclass(frozen=True)
class IndexMaps:
    """Contiguous indices for the users and items of a training frame."""

    user_ids: np.ndarray  # (n_users,) object: index -> user_id
    item_ids: np.ndarray  # (n_items,) object: index -> item_id

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> IndexMaps:
        return cls(np.sort(frame["user_id"].unique()), np.sort(frame["item_id"].unique()))

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, ids: pd.Series) -> np.ndarray:
        """Index of each id, -1 when unknown."""
        return _lookup(self.user_ids, ids)

    def item_index(self, ids: pd.Series) -> np.ndarray:
        return _lookup(self.item_ids, ids)


def _lookup(sorted_ids: np.ndarray, ids: pd.Series) -> np.ndarray:
    values = ids.to_numpy(dtype=object)
    if len(sorted_ids) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(sorted_ids, values), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == values, pos, -1).astype(np.int64)


def to_user_items(frame: pd.DataFrame, maps: IndexMaps) -> torch.Tensor:
    """CSR (n_users, n_items) of the frame's weights; rows with unknown ids are dropped."""
    users, items = maps.user_index(frame["user_id"]), maps.item_index(frame["item_id"])
    keep = (users >= 0) & (items >= 0)
    return build_user_items(
        torch.from_numpy(users[keep]),
        torch.from_numpy(items[keep]),
        torch.from_numpy(frame["weight"].to_numpy(np.float32)[keep]),
        maps.n_users,
        maps.n_items,
    )


def seen_items(user_items: torch.Tensor) -> list[np.ndarray]:
    """Per user row, the item indices it has interacted with (to exclude from rankings)."""
    crow = user_items.crow_indices().numpy()
    col = user_items.col_indices().numpy()
    return [col[crow[u] : crow[u + 1]] for u in range(len(crow) - 1)]
