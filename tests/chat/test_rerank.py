"""Cross-encoder reranking of a compact passage, only for the best bi-encoder candidates."""

from __future__ import annotations

import numpy as np

from Prod.chat_reco_engine.rerank import (
    BI_ENCODER,
    CROSS_ENCODER,
    Reranker,
    compact_passage,
    head_then_tail,
)
from Prod.chat_reco_engine.retrieval import Candidate
from Prod.common.items import product_text


def _candidate(n: int, similarity: float, description: str = "") -> Candidate:
    item = {
        "item_id": f"p{n}",
        "title": f"Wireless earbuds model {n}",
        "brand": "Acme",
        "category": "Audio",
        "price": 20 + n,
        "avg_rating": 4.2,
        "rating_count": 7,
        "description": description or f"Compact buds number {n}. Long battery life.",
    }
    meta = {k: item[k] for k in ("title", "brand", "category", "price")}
    return Candidate(
        item_id=item["item_id"], document=product_text(item), metadata=meta, similarity=similarity
    )


def test_compact_passage_keeps_identity_and_first_description_sentence_only():
    candidate = _candidate(3, 0.5, "Noise cancelling buds. Second sentence is left out.")
    passage = compact_passage(candidate)
    assert passage == "Wireless earbuds model 3. Acme. Audio. Noise cancelling buds"
    assert "Second sentence" not in passage and "$" not in passage and "Rated" not in passage


def test_compact_passage_falls_back_to_the_document_without_metadata():
    candidate = Candidate(item_id="x", document="Only text here.", metadata={}, similarity=0.1)
    assert compact_passage(candidate) == "Only text here."


def test_tail_scores_below_the_head_in_bi_encoder_order():
    head = np.array([2.0, -1.5, 0.3], dtype=np.float32)
    tail = np.array([0.8, 0.8, 0.6, 0.2], dtype=np.float32)
    relevance = head_then_tail(head, tail)
    assert relevance[:3].tolist() == head.tolist()
    assert relevance[3:].max() < head.min()
    assert relevance[3] == relevance[4] > relevance[5] > relevance[6]  # ties stay ties
    assert head_then_tail(head, np.array([])).tolist() == head.tolist()


def test_reranker_rescores_only_the_top_n_and_keeps_the_rest_in_retrieval_order(
    tiny_cross_encoder,
):
    reranker = Reranker(str(tiny_cross_encoder), max_length=32, top_n=4)
    reranker.load()
    assert reranker.ready and reranker.status()["top_n"] == 4
    rng = np.random.default_rng(5)
    similarities = rng.permutation(np.linspace(0.2, 0.9, 10))  # retrieval order shuffled
    candidates = [_candidate(n, float(s)) for n, s in enumerate(similarities)]
    relevance, scorer = reranker.score("wireless earbuds", candidates)
    assert scorer == CROSS_ENCODER and relevance.shape == (10,)
    by_similarity = np.argsort(-similarities)
    head, tail = by_similarity[:4], by_similarity[4:]
    assert relevance[tail].max() < relevance[head].min()
    assert np.all(np.diff(relevance[tail]) < 0)  # bi-encoder order kept after the head
    # the head's scores are the model's scores of the compact passages, in one batch
    pairs = [("wireless earbuds", compact_passage(candidates[i])) for i in head]
    expected = reranker._model.predict(pairs, batch_size=len(pairs), show_progress_bar=False)
    assert np.allclose(relevance[head], expected, atol=1e-5)


def test_unloaded_reranker_returns_similarities():
    reranker = Reranker("/nonexistent/cross-encoder")
    reranker.load()
    candidates = [_candidate(n, 0.1 * n) for n in range(3)]
    relevance, scorer = reranker.score("earbuds", candidates)
    assert scorer == BI_ENCODER
    assert np.allclose(relevance, [0.0, 0.1, 0.2])
