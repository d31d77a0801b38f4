"""ingest_chroma against the session's real Chroma server with the real MiniLM model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from Prod.common.embeddings import embed_texts
from Prod.common.errors import IngestError
from Prod.common.items import embedding_text, product_text
from Prod.common.stores import chroma_for
from Prod.datasets.ingest.chroma import HASH_KEY, ingest_chroma, sync_products
from Prod.datasets.ingest.validate import read_products


class CountingEmbedder:
    """The real model, counting the texts it embeds."""

    def __init__(self, model) -> None:
        self.model = model
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return embed_texts(self.model, texts)


class CountingCollection:
    """A real Chroma collection, recording the size of each upsert."""

    def __init__(self, collection) -> None:
        self.collection = collection
        self.upserts: list[int] = []

    def upsert(self, **kwargs) -> None:
        self.upserts.append(len(kwargs["ids"]))
        self.collection.upsert(**kwargs)

    def __getattr__(self, name):
        return getattr(self.collection, name)


@pytest.fixture
def client(settings):
    return chroma_for(settings)


@pytest.fixture
def collection_name(client, prefix):
    name = f"products-{prefix.rstrip('_')}"
    yield name
    client.delete_collection(name)


def _stored(client, name: str) -> dict[str, dict]:
    got = client.get_collection(name).get(include=["metadatas"])
    return dict(zip(got["ids"], got["metadatas"], strict=True))


def test_sync_embeds_only_new_or_changed_and_deletes_removed(
    client, collection_name, dataset: Path, prefix: str, embedder
) -> None:
    embed = CountingEmbedder(embedder)
    first = ingest_chroma(client, dataset, embed, collection_name=collection_name)
    assert (first.added, first.updated, first.unchanged, first.deleted) == (3, 0, 0, 0)
    assert len(embed.texts) == 3
    collection = client.get_collection(collection_name)
    assert collection.metadata["hnsw:space"] == "cosine"
    stored = _stored(client, collection_name)
    assert stored[f"{prefix}i2"]["brand"] == "Kitchara"
    assert "price" not in stored[f"{prefix}i3"]  # unknown values are omitted

    embed.texts.clear()
    again = ingest_chroma(client, dataset, embed, collection_name=collection_name)
    assert (again.added, again.updated, again.unchanged, again.deleted) == (0, 0, 3, 0)
    assert embed.texts == []  # unchanged products are not re-embedded
    assert _stored(client, collection_name) == stored

    products = json.loads((dataset / "ProductsRAG.json").read_text())
    products[0]["metadata"]["price"] = 79.99  # metadata change -> new hash
    products = [p for p in products if p["item_id"] != f"{prefix}i3"]
    (dataset / "ProductsRAG.json").write_text(json.dumps(products))
    third = ingest_chroma(
        client, dataset, embed, collection_name=collection_name, max_delete_share=0.5
    )
    assert (third.added, third.updated, third.unchanged, third.deleted) == (0, 1, 1, 1)
    assert third.deleted_ids == [f"{prefix}i3"]
    assert embed.texts == [products[0]["text"]]
    stored = _stored(client, collection_name)
    assert set(stored) == {f"{prefix}i1", f"{prefix}i2"}
    assert stored[f"{prefix}i1"]["price"] == 79.99
    assert stored[f"{prefix}i1"][HASH_KEY] != stored[f"{prefix}i2"][HASH_KEY]


def test_metadata_works_in_where_filters(client, collection_name, dataset, prefix, embedder):
    ingest_chroma(client, dataset, CountingEmbedder(embedder), collection_name=collection_name)
    query = embed_texts(embedder, ["coffee machine"])
    hits = client.get_collection(collection_name).query(
        query_embeddings=query, n_results=3, where={"price": {"$gte": 100}}
    )
    assert hits["ids"][0] == [f"{prefix}i2"]
    hits = client.get_collection(collection_name).query(
        query_embeddings=query, n_results=3, where={"category": "Sports & Outdoors"}
    )
    assert hits["ids"][0] == [f"{prefix}i1"]
    nearest = client.get_collection(collection_name).query(query_embeddings=query, n_results=1)
    assert nearest["ids"][0] == [f"{prefix}i2"]  # real embeddings: espresso ~ coffee


def test_writes_respect_the_max_batch_size(client, collection_name, dataset, embedder) -> None:
    collection = CountingCollection(client.get_or_create_collection(collection_name))
    products = read_products(dataset).products
    counts = sync_products(
        collection, products, CountingEmbedder(embedder), max_batch_size=2, embed_batch_size=8
    )
    assert collection.upserts == [2, 1]
    assert counts["added"] == 3


def test_bad_product_writes_nothing(client, collection_name, dataset, prefix, embedder) -> None:
    path = dataset / "ProductsRAG.json"
    path.write_text(path.read_text().replace('"rating_count": 0', '"rating_count": [0]'))
    with pytest.raises(IngestError, match=r"ProductsRAG.json:6: item_id .* must be a string"):
        ingest_chroma(client, dataset, CountingEmbedder(embedder), collection_name=collection_name)
    assert collection_name not in [c.name for c in client.list_collections()]
    client.get_or_create_collection(collection_name)  # so the fixture's cleanup finds it


def test_vectors_are_of_the_text_without_price_and_rating(
    client, collection_name, tmp_path: Path, embedder
) -> None:
    text = product_text(
        {
            "title": "Trail Boots",
            "brand": "Trailforge",
            "category": "Sports",
            "price": 1289.5,
            "avg_rating": 4.5,
            "rating_count": 1200,
            "description": "Waterproof boots for long hikes.",
        }
    )
    assert "Price: $1,289.50." in text and "Rated 4.5 out of 5 from 1,200 ratings." in text
    semantic = "Trail Boots. Brand: Trailforge. Category: Sports. Waterproof boots for long hikes."
    assert embedding_text(text) == semantic
    assert embedding_text("Price $89.99 and nothing else.") == "Price $89.99 and nothing else."
    folder = tmp_path / "dataset"
    folder.mkdir()
    record = {"item_id": "boots", "text": text, "metadata": {"title": "Trail Boots"}}
    (folder / "ProductsRAG.json").write_text(json.dumps([record]))

    embed = CountingEmbedder(embedder)
    ingest_chroma(client, folder, embed, collection_name=collection_name)
    assert embed.texts == [semantic]  # price and rating stay exact metadata filters
    stored = client.get_collection(collection_name).get(include=["documents", "embeddings"])
    assert stored["documents"] == [text]  # the chat engine still quotes the whole text
    np.testing.assert_allclose(
        stored["embeddings"][0], embed_texts(embedder, [semantic])[0], atol=1e-5
    )


def _write_products(dataset: Path, products: list) -> None:
    (dataset / "ProductsRAG.json").write_text(json.dumps(products, indent=1))


def test_empty_catalogue_file_is_refused_and_deletes_nothing(
    client, collection_name, dataset: Path, prefix: str, embedder
) -> None:
    """Issue 13 item 2: a ProductsRAG.json of [] deleted the whole live catalogue, exit 0."""
    embed = CountingEmbedder(embedder)
    ingest_chroma(client, dataset, embed, collection_name=collection_name)
    stored = _stored(client, collection_name)
    _write_products(dataset, [])
    with pytest.raises(IngestError) as caught:
        ingest_chroma(client, dataset, embed, collection_name=collection_name)
    message = caught.value.message
    assert message.startswith("refusing to delete 3 of the 3 stored products (100%, above the 20%")
    assert f"{prefix}i1, {prefix}i2, {prefix}i3" in message and "--allow-mass-delete" in message
    assert caught.value.details["would_delete"] == 3
    assert _stored(client, collection_name) == stored

    allowed = ingest_chroma(
        client, dataset, embed, collection_name=collection_name, allow_mass_delete=True
    )
    assert allowed.deleted == 3 and allowed.deleted_ids == [f"{prefix}i{n}" for n in (1, 2, 3)]
    assert _stored(client, collection_name) == {}


def test_truncated_catalogue_above_the_share_writes_nothing(
    client, collection_name, dataset: Path, prefix: str, embedder
) -> None:
    embed = CountingEmbedder(embedder)
    ingest_chroma(client, dataset, embed, collection_name=collection_name)
    stored = _stored(client, collection_name)
    products = json.loads((dataset / "ProductsRAG.json").read_text())
    products[0]["text"] += " Now lighter."  # a change that must not land either
    _write_products(dataset, products[:1])  # truncated: 2 of 3 gone
    embed.texts.clear()
    with pytest.raises(IngestError, match=r"refusing to delete 2 of the 3 stored products"):
        ingest_chroma(client, dataset, embed, collection_name=collection_name, max_delete_share=0.5)
    assert embed.texts == [] and _stored(client, collection_name) == stored


def test_skip_bad_rows_never_deletes_the_skipped_products(
    client, collection_name, dataset: Path, prefix: str, embedder
) -> None:
    """Issue 13 item 2: --skip-bad-rows deleted the skipped products from Chroma."""
    embed = CountingEmbedder(embedder)
    ingest_chroma(client, dataset, embed, collection_name=collection_name)
    stored = _stored(client, collection_name)
    products = json.loads((dataset / "ProductsRAG.json").read_text())
    products[1]["text"] = ""  # i2 is now a bad row
    _write_products(dataset, products)
    report = ingest_chroma(
        client,
        dataset,
        embed,
        collection_name=collection_name,
        skip_bad_rows=True,
        max_delete_share=1.0,
    )
    assert len(report.bad_rows) == 1 and report.deleted == 0 and report.kept_skipped == 1
    assert _stored(client, collection_name) == stored  # i2 keeps its last good version

    # a bad entry without a readable item_id could be any product: nothing is deleted
    _write_products(dataset, [products[0], {"text": "no id"}])
    held = ingest_chroma(
        client,
        dataset,
        embed,
        collection_name=collection_name,
        skip_bad_rows=True,
        allow_mass_delete=True,
    )
    assert held.deleted == 0 and held.deletes_held_back
    assert set(_stored(client, collection_name)) == set(stored)
