"""The embedding backends (torch fp32, ONNX fp32, ONNX int8) on the real MiniLM weights, and the
Chroma ingest re-embedding a catalogue when the embedder changes."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from Prod.common.embeddings import embed_texts, load_embedder, resolve_device, resolve_model_path
from Prod.common.errors import InvalidInput
from Prod.common.items import EMBEDDER_KEY, embedder_function, vectors_id
from Prod.common.stores import chroma_for
from Prod.datasets.ingest.chroma import ingest_chroma

TEXTS = [
    "Brewista Pro Espresso Machine. Brand: Brewista. Category: Home & Kitchen. A 15-bar pump "
    "espresso machine with a steam wand for milk drinks and a removable water tank.",
    "Summit Ridge Air Running Shoes 2. Brand: Summit Ridge. Category: Sports & Outdoors. "
    "High-end running shoes with a breathable mesh upper and responsive foam.",
    "PlayNest Plush Teddy Bear. Brand: PlayNest. Category: Toys & Games. Ultra-soft fabric.",
    "wireless noise cancelling headphones",
    "trainers for road running",
    "cheap coffee maker",
]


@pytest.fixture(scope="module")
def torch_model():
    return load_embedder("", None, "torch")


@pytest.fixture(scope="module")
def reference(torch_model) -> np.ndarray:
    return embed_texts(torch_model, TEXTS)


def test_default_backend_is_int8_onnx_and_agrees_with_fp32_torch(embedder, reference) -> None:
    assert embedder.embedder_id == "all-MiniLM-L6-v2|onnx-int8-v2|seq128"
    vectors = embed_texts(embedder, TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    cosine = (vectors * reference).sum(axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.98


def test_onnx_fp32_reproduces_torch(reference) -> None:
    onnx = load_embedder("", None, "onnx")
    assert onnx.embedder_id == "all-MiniLM-L6-v2|onnx-v2|seq128"
    cosine = (embed_texts(onnx, TEXTS) * reference).sum(axis=1)
    assert cosine.min() >= 0.9999


def test_int8_keeps_the_nearest_product_for_queries(embedder, torch_model) -> None:
    products, queries = TEXTS[:3], TEXTS[3:]
    for model in (embedder, torch_model):
        scores = embed_texts(model, queries) @ embed_texts(model, products).T
        # "trainers for road running" -> running shoes, "cheap coffee maker" -> espresso machine
        assert scores[1].argmax() == 1 and scores[2].argmax() == 0


def test_batching_and_order_do_not_change_vectors(embedder) -> None:
    whole = embed_texts(embedder, TEXTS, batch_size=64)
    in_pairs = embed_texts(embedder, TEXTS[::-1], batch_size=2)[::-1]
    # int8 activations are quantised per run, so each text runs alone (two workers side by side):
    # other texts never move a vector (the chat engine embeds queries alone, the ingest in batches)
    assert embedder.workers >= 1
    np.testing.assert_allclose(whole, in_pairs, atol=1e-6)
    single = embed_texts(embedder, [TEXTS[0]], batch_size=1)
    np.testing.assert_allclose(single[0], whole[0], atol=1e-6)


def test_torch_is_truncated_at_the_trained_length(torch_model) -> None:
    assert torch_model.max_seq_length == 128
    assert torch_model.embedder_id == "all-MiniLM-L6-v2|torch|seq128"
    assert load_embedder("", None, "torch") is torch_model  # cached: one model per process


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not one of torch, onnx, onnx-int8"):
        load_embedder("", None, "tensorrt")


def test_auto_device_is_the_gpu_only_where_torch_sees_one() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == resolve_device(None) == expected
    assert resolve_device("cpu") == "cpu"


def test_a_gpu_that_is_not_there_falls_back_to_the_cpu_backend(embedder) -> None:
    # no machine has 100 GPUs: the configured CPU backend serves, with its own vectors
    assert resolve_device("cuda:99") == "cpu"
    model = load_embedder("", "cuda:99", "onnx-int8")
    assert model.device == "cpu" and model.embedder_id == embedder.embedder_id
    assert np.allclose(embed_texts(model, TEXTS), embed_texts(embedder, TEXTS), atol=1e-6)


def test_an_unknown_device_is_refused_by_the_settings() -> None:
    from pydantic import ValidationError

    from config import Settings

    with pytest.raises(ValidationError, match="embedding_device"):
        Settings(embedding_device="gpu")
    assert Settings(embedding_device="cuda:1").embedding_device == "cuda:1"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none in CI)")
def test_on_the_gpu_torch_computes_the_reference_vectors(reference) -> None:
    model = load_embedder("", "cuda", "onnx-int8")  # the ONNX backends are CPU-only
    assert model.device.type == "cuda" and model.embedder_id == "all-MiniLM-L6-v2|torch|seq128"
    cosine = (embed_texts(model, TEXTS) * reference).sum(axis=1)
    assert cosine.min() > 0.9999, cosine


def test_model_the_export_cannot_reproduce_falls_back_to_torch(tmp_path, monkeypatch) -> None:
    # the real weights with CLS pooling: the ONNX recipe only reproduces mean pooling
    folder = tmp_path / "cls-minilm"
    shutil.copytree(resolve_model_path(""), folder)
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    pooling.write_text(json.dumps(config))
    monkeypatch.setenv("RECO_EMBEDDING_CACHE", str(tmp_path / "cache"))
    model = load_embedder(str(folder), None, "onnx-int8")
    assert model.embedder_id == f"{folder}|torch|seq128"
    assert embed_texts(model, ["hello"]).shape == (1, 384)
    assert not list((tmp_path / "cache").glob("*/meta.json"))  # nothing half-exported kept


def test_int8_graph_runs_fused_attention_on_int8_products(embedder) -> None:
    import onnx

    graph = onnx.load(embedder.model_path).graph
    ops = {node.op_type for node in graph.node}
    # the transformer optimiser fused each layer's attention, the quantiser made it int8
    assert {"QAttention", "EmbedLayerNormalization", "MatMulInteger"} <= ops, ops
    assert "Softmax" not in ops and "SkipLayerNormalization" not in ops


@pytest.fixture
def catalogue(tmp_path: Path) -> tuple[Path, str, str]:
    prefix = f"e{uuid.uuid4().hex[:10]}_"
    records = [
        {"item_id": f"{prefix}{i}", "text": text, "metadata": {"title": text.split(".")[0]}}
        for i, text in enumerate(TEXTS[:3])
    ]
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "ProductsRAG.json").write_text(json.dumps(records))
    return folder, f"products-{prefix.rstrip('_')}", prefix


def test_changing_the_embedder_re_embeds_the_whole_catalogue(
    settings, catalogue, embedder, torch_model
) -> None:
    folder, name, prefix = catalogue
    client = chroma_for(settings)
    try:
        first = ingest_chroma(client, folder, embedder_function(torch_model), collection_name=name)
        recorded = vectors_id(torch_model.embedder_id)
        assert recorded == "all-MiniLM-L6-v2|torch|seq128|text-without-price-rating"
        assert (first.added, first.embedder, first.reembedded_all) == (3, recorded, False)
        assert client.get_collection(name).metadata[EMBEDDER_KEY] == recorded

        same = ingest_chroma(client, folder, embedder_function(torch_model), collection_name=name)
        assert (same.embedded, same.unchanged, same.reembedded_all) == (0, 3, False)

        switched = ingest_chroma(client, folder, embedder_function(embedder), collection_name=name)
        assert (switched.embedded, switched.updated, switched.reembedded_all) == (3, 3, True)
        collection = client.get_collection(name)
        assert collection.metadata[EMBEDDER_KEY] == vectors_id(embedder.embedder_id)
        stored = collection.get(include=["embeddings"])
        by_id = dict(zip(stored["ids"], stored["embeddings"], strict=True))
        expected = embed_texts(embedder, TEXTS[:3])
        for i, vector in enumerate(expected):
            np.testing.assert_allclose(by_id[f"{prefix}{i}"], vector, atol=1e-5)
        # still a cosine index after the metadata update: distance = 1 - cosine
        hits = collection.query(query_embeddings=expected[:1], n_results=3)
        for item_id, distance in zip(hits["ids"][0], hits["distances"][0], strict=True):
            cosine = float(expected[0] @ expected[int(item_id.removeprefix(prefix))])
            assert distance == pytest.approx(1 - cosine, abs=1e-3)

        again = ingest_chroma(client, folder, embedder_function(embedder), collection_name=name)
        assert (again.embedded, again.reembedded_all) == (0, False)
    finally:
        client.delete_collection(name)
