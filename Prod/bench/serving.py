"""``reco bench serving``: the serving engine against the naive design on the same synthetic model.

Steps: temporary Postgres/Redis/Chroma on free ports; a synthetic clustered catalogue, users and
their seen items in Postgres; a model published by the trainer's publisher; the engine and the
naive baseline each under uvicorn in a subprocess on loopback; a keep-alive HTTP/1.1 load generator
(raw asyncio streams, so the client costs little of the 2 cores the servers need).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np

from Prod.bench.servers import cpu_seconds, start_server, stop_server
from Prod.common import model_store
from Prod.common.hub import OFFLINE_ENV
from Prod.common.logs import get_logger

log = get_logger(__name__)
Progress = Callable[[str], None]
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


@dataclass
class BenchConfig:
    items: int = 20_000
    factors: int = 64
    users: int = 2_000
    seen_per_user: int = 20
    requests: int = 3_000
    concurrency: int = 32
    naive_requests: int = 500
    k: int = 10
    max_seconds: float = 60.0  # per load phase
    seed: int = 0
    workers: int = 1  # engine worker processes (settings.reco_workers)
    ann_min_items: int | None = None  # the engine's ANN_MIN_ITEMS (None: its default)
    recall_users: int = 300  # users whose served top-k is compared with the exact one
    naive: bool = True  # also measure the naive design


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3) if self.latencies_s else float("nan")

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0


# --- synthetic data -------------------------------------------------------------------------


def synthetic_model(cfg: BenchConfig) -> dict:
    """Clustered item/user factors, item metadata and each user's seen items (numpy, seeded)."""
    rng = np.random.default_rng(cfg.seed)
    n_clusters = 20
    centers = rng.normal(0, 1, (n_clusters, cfg.factors)).astype(np.float32)
    item_cluster = rng.integers(0, n_clusters, cfg.items)
    item_factors = (centers[item_cluster] + rng.normal(0, 0.5, (cfg.items, cfg.factors))) * 0.1
    user_cluster = rng.integers(0, n_clusters, cfg.users)
    user_factors = (centers[user_cluster] + rng.normal(0, 0.5, (cfg.users, cfg.factors))) * 0.1
    item_ids = [f"b-i{j:06d}" for j in range(cfg.items)]
    user_ids = [f"b-u{i:05d}" for i in range(cfg.users)]
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(n_clusters)]
    seen = [
        rng.choice(by_cluster[c], size=min(cfg.seen_per_user, len(by_cluster[c])), replace=False)
        for c in user_cluster
    ]
    metadata = [
        {
            "title": f"Product {j}",
            "brand": f"brand{j % 50}",
            "category": f"cat{item_cluster[j]}",
            "price": round(float(5 + (j * 7919) % 500), 2),
            "avg_rating": round(1 + (j % 40) / 10, 1),
        }
        for j in range(cfg.items)
    ]
    return {
        "item_ids": item_ids,
        "user_ids": user_ids,
        "metadata": metadata,
        "seen": seen,
        "item_factors": item_factors.astype(np.float32),
        "user_factors": user_factors.astype(np.float32),
    }


def load_postgres(settings, data: dict) -> int:
    """COPY items, users and seen interactions into Postgres; returns the max interaction id."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    dsn = f"host={url.host} port={url.port} user={url.username} dbname={url.database}"
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY item (item_id, title, brand, category, price, avg_rating) FROM STDIN"
        ) as cp:
            for item_id, m in zip(data["item_ids"], data["metadata"], strict=True):
                cp.write_row(
                    (item_id, m["title"], m["brand"], m["category"], m["price"], m["avg_rating"])
                )
        with cur.copy('COPY "user" (user_id) FROM STDIN') as cp:
            for user_id in data["user_ids"]:
                cp.write_row((user_id,))
        with cur.copy(
            "COPY interaction (user_id, item_id, event, weight, occurred_at) FROM STDIN"
        ) as cp:
            for user_id, rows in zip(data["user_ids"], data["seen"], strict=True):
                for n, row in enumerate(rows.tolist()):
                    cp.write_row(
                        (
                            user_id,
                            data["item_ids"][row],
                            "purchase",
                            8.0,
                            base + timedelta(seconds=n),
                        )
                    )
        conn.commit()
        return int(cur.execute("select coalesce(max(id), 0) from interaction").fetchone()[0])


def publish(settings, cfg: BenchConfig, data: dict, watermark: int) -> str:
    """Publish the synthetic factors with the trainer's publisher (versioned, atomic switch)."""
    from Prod.als_trainer import publisher
    from Prod.als_trainer.service import publish_and_activate, register_version

    version = publisher.new_version_id()
    register_version(settings.database_url, version, watermark, {"factors": cfg.factors})
    meta = model_store.ModelMeta(
        version=version,
        dim=cfg.factors,
        n_users=cfg.users,
        n_items=cfg.items,
        collection=model_store.item_collection_name(version),
        alpha=2.0,
        regularization=0.05,
        trained_at=datetime.now(timezone.utc).isoformat(),
        extra={"data_watermark": str(watermark)},
    )
    factors = publisher.FactorSet(
        data["user_ids"],
        data["user_factors"],
        data["item_ids"],
        data["item_factors"],
        data["metadata"],
    )
    publish_and_activate(settings, meta, factors)
    return version


def store_naive_users(settings, data: dict) -> None:
    """The naive design's per-user record: factor and seen items, JSON in one Redis string."""
    from Prod.bench.naive import NAIVE_KEY
    from Prod.common.stores import redis_for

    pipe = redis_for(settings).pipeline(transaction=False)
    for user_id, factor, rows in zip(
        data["user_ids"], data["user_factors"], data["seen"], strict=True
    ):
        record = {"factor": factor.tolist(), "seen": [data["item_ids"][r] for r in rows]}
        pipe.set(NAIVE_KEY.format(user_id=user_id), json.dumps(record))
    pipe.execute()


# --- servers --------------------------------------------------------------------------------


def _env(settings, port: int, workers: int = 1, ann_min_items: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ENVIRONMENT": "test",
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "CHROMA_HOST": settings.chroma_host,
            "CHROMA_PORT": str(settings.chroma_port),
            "RECO_PORT": str(port),
            "RECO_WORKERS": str(workers),
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            **OFFLINE_ENV,
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "API_KEY": "",
        }
    )
    if ann_min_items is not None:
        env["ANN_MIN_ITEMS"] = str(ann_min_items)
    return env


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its live children (uvicorn workers), MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return float("nan")
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return kb / 1024 + sum(_rss_mb(int(c)) for c in children)


def wait_for_ann(port: int, timeout_s: float) -> dict:
    """The engine's ``ann`` status once it is no longer building (seconds waited added)."""
    started = time.perf_counter()
    while True:
        ann = httpx.get(f"http://127.0.0.1:{port}/api/v1/status", timeout=10).json()["ann"]
        if ann["state"] != "building" or time.perf_counter() - started > timeout_s:
            return {**ann, "waited_s": round(time.perf_counter() - started, 1)}
        time.sleep(0.5)


def recall_at_k(port: int, data: dict, cfg: BenchConfig) -> float:
    """Mean share of the exact top-k (seen items removed) in the served top-k, over
    ``cfg.recall_users`` users: 1.0 for the exact scan, below for an approximate index."""
    rng = np.random.default_rng(cfg.seed + 2)
    users = rng.choice(len(data["user_ids"]), min(cfg.recall_users, len(data["user_ids"])), False)
    found = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for user in users.tolist():
            scores = data["item_factors"] @ data["user_factors"][user]
            scores[data["seen"][user]] = -np.inf
            exact = {data["item_ids"][r] for r in np.argpartition(-scores, cfg.k)[: cfg.k]}
            body = client.get(f"/api/v1/recommend/{data['user_ids'][user]}?k={cfg.k}").json()
            found += len(exact & {item["item_id"] for item in body["items"]})
    return found / (cfg.k * len(users))


# --- load generator -------------------------------------------------------------------------


async def _connection(port: int, paths: list[str], result: LoadResult, deadline: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for path in paths:
            if time.perf_counter() > deadline:
                break
            start = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            match = _LENGTH.search(head)
            body = await reader.readexactly(int(match.group(1))) if match else b""
            result.latencies_s.append(time.perf_counter() - start)
            if head[9:12] != b"200" or b'"items"' not in body:
                result.errors += 1
    except (OSError, asyncio.IncompleteReadError):
        result.errors += 1
    finally:
        writer.close()


async def _load(port: int, paths: list[str], concurrency: int, max_seconds: float) -> LoadResult:
    result = LoadResult()
    shares = [paths[i::concurrency] for i in range(concurrency)]
    start = time.perf_counter()
    deadline = start + max_seconds
    await asyncio.gather(*(_connection(port, share, result, deadline) for share in shares if share))
    result.elapsed_s = time.perf_counter() - start
    return result


def run_load(port: int, paths: list[str], concurrency: int, max_seconds: float) -> LoadResult:
    """Send ``paths`` over ``concurrency`` keep-alive connections; latencies and errors."""
    try:
        import uvloop

        return uvloop.run(_load(port, paths, concurrency, max_seconds))
    except ImportError:
        return asyncio.run(_load(port, paths, concurrency, max_seconds))


def request_paths(user_ids: list[str], n: int, k: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"/api/v1/recommend/{user_ids[i]}?k={k}" for i in rng.integers(0, len(user_ids), n)]


# --- the benchmark --------------------------------------------------------------------------


def run_serving_bench(cfg: BenchConfig, progress: Progress = print) -> dict:
    """Everything above, end to end; returns the figures (and tears the servers down)."""
    from config import Settings
    from Prod.common.db import migrate
    from Prod.orchestrate.local_infra import LocalInfra, free_port

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="reco-bench-") as tmp:
        root = Path(tmp)
        infra = LocalInfra(root / "infra", free_port(), free_port(), free_port())
        engine_proc = naive_proc = None
        try:
            progress("starting temporary Postgres, Redis and Chroma")
            infra.up(timeout_s=120)
            settings = Settings(environment="test", **infra.settings_overrides(), api_key=None)
            migrate(settings.database_url)
            progress(
                f"synthetic model: {cfg.items} items x {cfg.factors} factors, {cfg.users} users"
            )
            data = synthetic_model(cfg)
            watermark = load_postgres(settings, data)
            started = time.perf_counter()
            version = publish(settings, cfg, data, watermark)
            publish_s = time.perf_counter() - started
            progress(f"published {version} in {publish_s:.1f} s")
            if cfg.naive:
                store_naive_users(settings, data)

            port, naive_port = free_port(), free_port()
            progress("starting the engine (uvicorn subprocess)")
            engine_proc = start_server(
                "Prod.als_reco_engine.main",
                _env(settings, port, cfg.workers, cfg.ann_min_items),
                f"http://127.0.0.1:{port}/api/v1/status",
                lambda body: body.get("model_version") == version,
                root / "engine.log",
                timeout_s=900,  # 1M items: the load from Chroma takes minutes
            )
            rss_exact = _rss_mb(engine_proc.pid)
            progress("waiting for the ANN index (when the catalogue is above ANN_MIN_ITEMS)")
            ann = wait_for_ann(port, 600)
            rss = _rss_mb(engine_proc.pid)
            progress("warming up (every user's profile cached once)")
            warm = run_load(
                port,
                [f"/api/v1/recommend/{u}?k={cfg.k}" for u in data["user_ids"]],
                cfg.concurrency,
                cfg.max_seconds,
            )
            progress(f"concurrency 1: {cfg.requests} requests")
            paths = request_paths(data["user_ids"], cfg.requests, cfg.k, cfg.seed + 1)
            cpu_before = cpu_seconds(engine_proc.pid)
            serial = run_load(port, paths, 1, cfg.max_seconds)
            # server CPU per request: a figure the other load on a shared machine disturbs less
            cpu_ms = (
                (cpu_seconds(engine_proc.pid) - cpu_before) * 1e3 / max(len(serial.latencies_s), 1)
            )
            progress(f"concurrency {cfg.concurrency}: {cfg.requests} requests")
            parallel = run_load(port, paths, cfg.concurrency, cfg.max_seconds)
            strategy = httpx.get(f"http://127.0.0.1:{port}{paths[0]}").json()["strategy"]
            progress(f"recall@{cfg.k} against the exact top-k: {cfg.recall_users} users")
            recall = recall_at_k(port, data, cfg)
            stop_server(engine_proc)
            engine_proc = None

            naive = LoadResult()
            if cfg.naive:
                progress("starting the naive baseline")
                naive_proc = start_server(
                    "Prod.bench.naive",
                    _env(settings, naive_port),
                    f"http://127.0.0.1:{naive_port}/openapi.json",
                    lambda body: True,
                    root / "naive.log",
                    args=[
                        "--port",
                        str(naive_port),
                        "--collection",
                        model_store.item_collection_name(version),
                        "--redis-url",
                        settings.redis_url,
                        "--chroma-port",
                        str(settings.chroma_port),
                    ],
                )
                run_load(naive_port, paths[:50], 1, cfg.max_seconds)  # warm-up
                progress(f"naive at concurrency 1: {cfg.naive_requests} requests")
                naive = run_load(naive_port, paths[: cfg.naive_requests], 1, cfg.max_seconds)
        finally:
            stop_server(engine_proc)
            stop_server(naive_proc)
            infra.down()
    p50, naive_p50 = serial.percentile_ms(50), naive.percentile_ms(50)
    naive_ms = (lambda v: round(v, 3)) if cfg.naive else (lambda v: None)
    return {
        "items": cfg.items,
        "factors": cfg.factors,
        "users": cfg.users,
        "seen_per_user": cfg.seen_per_user,
        "k": cfg.k,
        "strategy": strategy,
        "requests_c1": len(serial.latencies_s),
        "p50_ms": round(p50, 3),
        "p99_ms": round(serial.percentile_ms(99), 3),
        "requests_c32": len(parallel.latencies_s),
        "concurrency": cfg.concurrency,
        "rps_c32": round(parallel.rps, 1),
        "p99_ms_c32": round(parallel.percentile_ms(99), 3),
        "errors": serial.errors + parallel.errors + warm.errors,
        "server_cpu_ms_per_request": round(cpu_ms, 3),
        "naive_requests": len(naive.latencies_s),
        "naive_p50_ms": naive_ms(naive_p50),
        "naive_p99_ms": naive_ms(naive.percentile_ms(99)),
        "naive_errors": naive.errors,
        "speedup": round(naive_p50 / p50, 2) if p50 and cfg.naive else None,
        "workers": cfg.workers,
        "publish_s": round(publish_s, 1),  # Redis users + Chroma items, the trainer's publisher
        "recall_at_k": round(recall, 4),
        "ann": ann,
        "server_rss_mb_exact": round(rss_exact, 1),
        "server_rss_mb": round(rss, 1),
        # other work on the machine shifts every latency: the 1-minute load around the run
        "load_avg_before": round(load_before, 2),
        "load_avg_after": round(os.getloadavg()[0], 2),
    }
