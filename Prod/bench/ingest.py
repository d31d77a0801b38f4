"""``reco bench ingest`` and ``reco bench embed``: how fast a dataset gets into the stores.

- ingest: a generated dataset loaded into a scratch Postgres database (fresh load and idempotent
  rerun, medians of ``repeats``) and embedded into a scratch Chroma collection;
- embed: the same product texts through each embedding backend, with the cosine of each vector to
  torch fp32 on the CPU (the reference).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from config import Settings
from Prod.bench.servers import cpu_seconds


def _generate(folder: Path, n_interactions: int, n_products: int) -> dict:
    from Prod.datasets.generate import generate_dataset

    return generate_dataset(
        folder,
        n_users=max(100, n_interactions // 60),
        n_items=n_products,
        n_interactions=n_interactions,
        progress=True,
    )


@contextmanager
def _bench_database(database_url: str):
    """A scratch database on the same server (dropped after), so no real data is touched."""
    import psycopg
    from sqlalchemy.engine import make_url

    from Prod.common.db import migrate
    from Prod.datasets.ingest.postgres import psycopg_conninfo

    name = f"reco_bench_ingest_{os.getpid()}"
    admin = psycopg_conninfo(database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    url = make_url(database_url).set(database=name).render_as_string(False)
    try:
        migrate(url)
        yield url
    finally:
        from Prod.common.db import get_engine

        get_engine(url).dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def _reset_tables(database_url: str) -> None:
    import psycopg

    from Prod.datasets.ingest.postgres import psycopg_conninfo

    with psycopg.connect(psycopg_conninfo(database_url), autocommit=True) as conn:
        conn.execute('truncate interaction, "user", item restart identity cascade')


def _bench_postgres(database_url: str, dataset: Path, repeats: int, postmaster: int | None) -> dict:
    from Prod.datasets.ingest.postgres import ingest_postgres

    fresh, rerun, cpu = [], [], []
    for _ in range(repeats):
        _reset_tables(database_url)
        cpu_before, client_before = cpu_seconds(postmaster, reaped=True), time.process_time()
        report = ingest_postgres(database_url, dataset)
        cpu.append(
            cpu_seconds(postmaster, reaped=True) - cpu_before + time.process_time() - client_before
        )
        fresh.append(report)
        rerun.append(ingest_postgres(database_url, dataset))
    rows = fresh[0].interactions.inserted
    total_s = statistics.median(r.seconds["total"] for r in fresh)
    return {
        "interactions": rows,
        "fresh_load_s": round(total_s, 3),
        "validate_s": round(statistics.median(r.seconds["validate"] for r in fresh), 3),
        "load_s": round(statistics.median(r.seconds["load"] for r in fresh), 3),
        "interactions_per_s": round(rows / total_s) if total_s else 0,
        "s_per_1m_interactions": round(total_s * 1_000_000 / rows, 3) if rows else None,
        "cpu_s_client_plus_server": round(statistics.median(cpu), 3),
        "rerun_s": round(statistics.median(r.seconds["total"] for r in rerun), 3),
        "rerun_inserted": rerun[-1].interactions.inserted,
        "repeats": repeats,
    }


def _bench_chroma(settings, dataset: Path, batch_size: int) -> dict:
    from Prod.common.embeddings import load_embedder
    from Prod.common.items import embedder_function
    from Prod.common.stores import chroma_for
    from Prod.datasets.ingest.chroma import ingest_chroma

    client = chroma_for(settings)
    name = f"bench-products-{int(time.time())}"
    model = load_embedder(settings.embedding_model)
    embed = embedder_function(model, batch_size)
    embed(["warm-up", "lazy initialisation"])  # the first calls pay for it
    try:
        cpu_before = time.process_time()
        first = ingest_chroma(
            client, dataset, embed, collection_name=name, embed_batch_size=batch_size
        )
        cpu_s = time.process_time() - cpu_before
        again = ingest_chroma(
            client, dataset, embed, collection_name=name, embed_batch_size=batch_size
        )
    finally:
        client.delete_collection(name)
    seconds = first.seconds
    return {
        "products": first.embedded,
        "products_per_s": round(first.products_per_s, 1),
        "embed_and_write_s": round(seconds["embed_and_write"], 3),
        # embedding alone, and what is left for Chroma (upserts, reads of stored hashes)
        "embed_s": round(seconds["embed"], 3),
        "write_s": round(seconds["embed_and_write"] - seconds["embed"], 3),
        # this process's CPU seconds (all threads): a rate a busy machine disturbs less
        "products_per_cpu_s": round(first.embedded / cpu_s, 1) if cpu_s > 0 else None,
        "embedder": first.embedder,
        "embed_workers": getattr(model, "workers", None),
        "embed_device": str(model.device),
        "rerun_s": round(again.seconds["total"], 3),
        "rerun_embedded": again.embedded,
        "batch_size": batch_size,
    }


def run_ingest_bench(
    settings: Settings, n_interactions: int, n_products: int, repeats: int, batch_size: int
) -> dict:
    """Generate a dataset in a temp folder, ingest it into a scratch Postgres database and a
    scratch Chroma collection of the stores ``settings`` name (both removed after), report
    rates."""
    import torch

    from Prod.orchestrate.local_infra import LocalInfra

    with tempfile.TemporaryDirectory(prefix="reco-bench-ingest-") as tmp:
        dataset = Path(tmp) / "dataset"
        generated = _generate(dataset, n_interactions, n_products)
        postgres_pid = LocalInfra.from_settings(settings).servers[0].pid()
        with _bench_database(settings.database_url) as database_url:
            postgres = _bench_postgres(database_url, dataset, repeats, postgres_pid)
        result = {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads(),
            "dataset": {k: generated.get(k) for k in ("users", "items", "interactions")},
            "postgres": postgres,
            "chroma": _bench_chroma(settings, dataset, batch_size),
        }
        result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
        return result


def _product_texts(dataset: Path | None, n_products: int) -> list[str]:
    """What the Chroma ingest embeds of the first ``n_products`` products of ``dataset``'s
    ProductsRAG.json, or of a freshly generated catalogue."""
    from Prod.common.items import embedding_text
    from Prod.datasets.ingest.validate import read_products

    if dataset is None:
        with tempfile.TemporaryDirectory(prefix="reco-bench-embed-") as tmp:
            _generate(Path(tmp), 1_000, n_products)
            return _product_texts(Path(tmp), n_products)
    products = read_products(Path(dataset)).products[:n_products]
    return [embedding_text(product.text) for product in products]


def _time_embedding(model, texts: list[str], repeats: int) -> tuple[np.ndarray, float, float]:
    """Vectors, median wall seconds and median process CPU seconds of embedding ``texts``."""
    from Prod.common.embeddings import embed_texts

    embed_texts(model, ["warm-up", "lazy initialisation"])  # the first calls pay for it
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        vectors = embed_texts(model, texts)
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return vectors, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def run_embed_bench(
    n_products: int, backends: list[str], repeats: int, dataset: Path | None
) -> dict:
    """Embed the same product texts with each CPU backend (and on the GPU when torch sees one):
    products/s, products per CPU-second and cosine to torch fp32 on the CPU (the reference)."""
    import torch

    from config import get_settings
    from Prod.common.embeddings import BACKENDS, embed_texts, load_embedder, resolve_device
    from Prod.common.errors import InvalidInput

    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise InvalidInput(
            f"unknown embedding backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}"
        )
    configured = get_settings().embedding_model
    texts = _product_texts(dataset, n_products)
    reference_model = load_embedder(configured, "cpu", "torch")
    reference = embed_texts(reference_model, texts)
    limit = reference_model.max_seq_length
    tokens = reference_model.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    targets = [("cpu", backend) for backend in backends]
    gpu = resolve_device("auto")
    if gpu != "cpu":
        targets.append((gpu, "torch"))
    rows = []
    load_before = os.getloadavg()[0]
    for device, backend in targets:
        model = load_embedder(configured, device, backend)
        vectors, wall_s, cpu_s = _time_embedding(model, texts, repeats)
        cosine = (vectors * reference).sum(axis=1)
        rows.append(
            {
                "backend": backend,
                "device": device,
                "embedder": model.embedder_id,
                # ONNX: texts side by side, one thread each; torch: one batch over all threads
                "threads": getattr(model, "workers", None) or torch.get_num_threads(),
                "products_per_s": round(len(texts) / wall_s, 1),
                "products_per_cpu_s": round(len(texts) / cpu_s, 1) if cpu_s > 0 else None,
                "seconds": round(wall_s, 3),
                "cosine_to_fp32_mean": round(float(cosine.mean()), 4),
                "cosine_to_fp32_min": round(float(cosine.min()), 4),
            }
        )
    return {
        "products": len(texts),
        "mean_tokens": round(float(np.mean([len(ids) for ids in tokens])), 1),
        "repeats": repeats,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "backends": rows,
    }
