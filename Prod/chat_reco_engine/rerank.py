"""Cross-encoder reranking, loaded in the background; bi-encoder scores when it is unavailable.

Latency budget: a MiniLM-L6-sized cross-encoder costs ~21 MFLOP per token, so 50 full product
texts (~90 tokens each) are ~100 GFLOP a request, seconds on 2 CPU cores. The reranker therefore
scores only the ``top_n`` best bi-encoder candidates, each as a compact passage (title, brand,
category, first description sentence) truncated to ``max_length`` tokens, in one forward pass.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from Prod.chat_reco_engine.retrieval import Candidate, description_sentences
from Prod.common.hub import prefer_offline_hub
from Prod.common.logs import get_logger

log = get_logger(__name__)

CROSS_ENCODER = "cross-encoder"
BI_ENCODER = "bi-encoder"
_PASSAGE_MAX_CHARS = 400  # well past any max_length worth using; spares the tokenizer long text


def compact_passage(candidate: Candidate) -> str:
    """What the cross-encoder reads of a product: title, brand, category and the first sentence
    of the description (the fields that say what it is; price and rating are filters' job)."""
    meta = candidate.metadata
    sentences = description_sentences(candidate.document)
    parts = [
        meta.get("title"),
        meta.get("brand"),
        meta.get("category"),
        sentences[0] if sentences else None,
    ]
    fields = [str(p).strip().rstrip(".") for p in parts if p and str(p).strip()]
    passage = ". ".join(fields) if fields else candidate.document
    return passage[:_PASSAGE_MAX_CHARS]


def head_then_tail(head_scores: np.ndarray, tail_similarities: np.ndarray) -> np.ndarray:
    """(h,), (t,) -> (h + t,) relevance: the reranked head keeps its cross-encoder scores; the
    tail (not reranked) sits below the lowest of them, in bi-encoder order, spaced by its
    similarity gaps so ties stay ties."""
    head = np.asarray(head_scores, dtype=np.float32).reshape(-1)
    tail = np.asarray(tail_similarities, dtype=np.float32).reshape(-1)
    if tail.size == 0:
        return head
    floor = float(head.min()) if head.size else 0.0
    below = floor - 1e-3 - (float(tail.max()) - tail)
    return np.concatenate([head, below.astype(np.float32)])


class Reranker:
    """Holds the configured ``CrossEncoder``; never raises from scoring.

    States: ``disabled`` (no model configured), ``loading``, ``ready``, ``unavailable`` (load
    failed, e.g. weights not cached while ``HF_HUB_OFFLINE=1``; the reason is kept for /health).
    """

    def __init__(self, model_name: str, max_length: int = 48, top_n: int = 20) -> None:
        self.model_name = model_name.strip()
        self.max_length = max_length  # tokens of one (query, passage) input
        self.top_n = top_n  # best bi-encoder candidates rescored; the rest follow them
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
                prefer_offline_hub()
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(self.model_name, device="cpu", max_length=self.max_length)
            self.state = "ready"
            self.load_seconds = round(time.perf_counter() - started, 3)
            log.info("cross-encoder %s loaded in %.1f s", self.model_name, self.load_seconds)
        except Exception as exc:  # any load failure means "fall back", never a failed request
            self.state = "unavailable"
            self.error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]  # one log line
            log.warning(
                "cross-encoder %s unavailable, using bi-encoder scores: %s",
                self.model_name,
                self.error,
            )
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
        return {
            "model": self.model_name or None,
            "status": self.state,
            "error": self.error,
            "scorer": CROSS_ENCODER if self.ready else BI_ENCODER,
            "top_n": self.top_n,
            "max_tokens": self.max_length,
        }

    def score(self, query: str, candidates: list[Candidate]) -> tuple[np.ndarray, str]:
        """(n,) relevance scores, aligned with ``candidates``, and which scorer produced them.

        The ``top_n`` most similar candidates get cross-encoder scores (all pairs in one batch);
        the others score below them in bi-encoder order (:func:`head_then_tail`)."""
        similarities = np.array([c.similarity for c in candidates], dtype=np.float32)
        if not candidates or not self.ready:
            return similarities, BI_ENCODER
        order = np.argsort(-similarities, kind="stable")
        head, tail = order[: self.top_n], order[self.top_n :]
        try:
            pairs = [(query, compact_passage(candidates[i])) for i in head]
            scores = self._model.predict(pairs, batch_size=len(pairs), show_progress_bar=False)
        except Exception as exc:
            log.warning("cross-encoder scoring failed, using bi-encoder scores: %s", exc)
            return similarities, BI_ENCODER
        relevance = np.empty(len(candidates), dtype=np.float32)
        relevance[order] = head_then_tail(np.asarray(scores).reshape(-1), similarities[tail])
        return relevance, CROSS_ENCODER
