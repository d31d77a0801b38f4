"""Publishing a model end to end (``reco bench publish``): time to the switch and Chroma fill.

On temporary Postgres/Redis/Chroma servers, N synthetic items x F factors (and U users) go
through the trainer's own publish (:func:`Prod.als_trainer.service.publish_and_activate` without
the fill): users and the items hash to Redis, read back, meta, switch. Then the engine's load of
the items (:func:`Prod.common.model_store.read_items`), and the Chroma collection filled from
Redis (:func:`Prod.als_trainer.publisher.fill_item_index`) once per ``writers`` value (each fill
replaces the previous one's collection), with the Chroma server's CPU seconds from /proc.
``chroma_read``: also the engines' old load path, the paged read back from Chroma.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from Prod.bench.als import _load_average
from Prod.common import model_store
from Prod.orchestrate.local_infra import free_port

BenchProgress = Callable[[str], None]
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process and its descendants (all threads), from /proc;
    None if unknown."""
    if pid is None or _stat(str(pid)) is None:
        return None
    stats = {p: s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(p)) is not None}
    tree, grew = {str(pid)}, True
    while grew:  # fields[1] is the parent pid
        grew = False
        for p, fields in stats.items():
            if p not in tree and fields[1] in tree:
                tree.add(p)
                grew = True
    # utime, stime: fields 14 and 15 of /proc/PID/stat
    return sum(int(stats[p][11]) + int(stats[p][12]) for p in tree if p in stats) / _TICK


def synthetic_factors(items: int, users: int, factors: int, seed: int):
    from Prod.als_trainer.publisher import FactorSet

    rng = np.random.default_rng(seed)
    return FactorSet(
        user_ids=[f"pb-u{i:07d}" for i in range(users)],
        user_factors=rng.standard_normal((users, factors), dtype=np.float32) * 0.1,
        item_ids=[f"pb-i{j:07d}" for j in range(items)],
        item_factors=rng.standard_normal((items, factors), dtype=np.float32) * 0.1,
        item_metadata=[
            {"title": f"Product {j}", "category": f"cat{j % 20}", "price": float(5 + j % 500)}
            for j in range(items)
        ],
    )


class _Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.stages[name] = round(time.perf_counter() - start, 3)


def bench_publish(
    items: int = 100_000,
    users: int = 10_000,
    factors: int = 64,
    writers: tuple[int, ...] = (0,),
    batch: int = 0,
    seed: int = 0,
    chroma_read: bool = False,
    progress: BenchProgress | None = None,
) -> dict:
    """Run the bench (module docstring); returns the report."""
    from config import Settings
    from Prod.als_trainer import publisher
    from Prod.als_trainer.service import publish_and_activate, register_version
    from Prod.common.db import migrate
    from Prod.common.stores import chroma_for, redis_for
    from Prod.orchestrate.local_infra import LocalInfra

    report = progress or (lambda label: None)
    load_before = _load_average()
    data = synthetic_factors(items, users, factors, seed)
    with tempfile.TemporaryDirectory(prefix="reco-bench-publish-") as folder:
        report("starting temporary Postgres, Redis and Chroma")
        infra = LocalInfra(Path(folder), free_port(), free_port(), free_port())
        infra.up(timeout_s=180)
        try:
            settings = Settings(environment="test", **infra.settings_overrides(), api_key=None)
            migrate(settings.database_url)  # the registry row and the switch's mirror
            client, chroma = redis_for(settings), chroma_for(settings)
            chroma_pid = next(s for s in infra.servers if s.name == "chroma").pid()
            memory_before = int(client.info("memory")["used_memory"])
            version = publisher.new_version_id()
            register_version(settings.database_url, version, 0, {"factors": factors})
            meta = model_store.ModelMeta(
                version=version,
                dim=factors,
                n_users=users,
                n_items=items,
                collection=model_store.item_collection_name(version),
                alpha=2.0,
                regularization=0.05,
                trained_at=datetime.now(timezone.utc).isoformat(),
            )
            timer = _Timer()
            report(f"publishing {items:,} items x {factors} and {users:,} users up to the switch")
            start = time.perf_counter()
            publish_and_activate(settings, meta, data, timer.stage, fill=False)
            to_switch = time.perf_counter() - start
            assert model_store.active_version(client) == version
            items_bytes = int(client.memory_usage(model_store.items_key(version), samples=0) or 0)
            memory_after = int(client.info("memory")["used_memory"])

            report("the engine's load of the items (Redis items hash)")
            start = time.perf_counter()
            ids, matrix, _ = model_store.load_items(
                client, model_store.read_meta(client, version), lambda: chroma
            )
            load_redis = time.perf_counter() - start
            assert len(ids) == items and matrix.shape == (items, factors)
            del ids, matrix

            fills = []
            for count in writers:
                report(f"filling the Chroma collection, {count or publisher.ITEM_WRITERS} writers")
                cpu_before = process_cpu_s(chroma_pid)
                start, own_cpu = time.perf_counter(), time.process_time()
                publisher.fill_item_index(client, chroma, version, writers=count, batch=batch)
                fill_s = time.perf_counter() - start
                own_cpu = time.process_time() - own_cpu  # the writer: read, encode, send
                cpu_after = process_cpu_s(chroma_pid)
                cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
                per_item = None if cpu is None else round(cpu / items * 1e3, 3)
                fills.append(
                    {
                        "writers": count or publisher.ITEM_WRITERS,
                        "fill_s": round(fill_s, 2),
                        "items_per_s": round(items / fill_s),
                        "chroma_cpu_s": None if cpu is None else round(cpu, 1),
                        "chroma_cpu_ms_per_item": per_item,
                        "writer_cpu_s": round(own_cpu, 1),
                    }
                )
            state = model_store.item_index_state(model_store.read_meta(client, version))
            load_chroma = None
            if chroma_read:
                report("the old load path: paged read back from Chroma")
                start = time.perf_counter()
                ids, _, _ = model_store.load_item_factors(chroma, meta)
                load_chroma = round(time.perf_counter() - start, 2)
                assert len(ids) == items
        finally:
            infra.down()
    batch_used = batch or "server max"
    return {
        "items": items,
        "users": users,
        "factors": factors,
        "to_switch_s": round(to_switch, 2),
        "stages_s": timer.stages,
        "items_hash_mb": round(items_bytes / 2**20, 1),
        "redis_used_mb_added": round((memory_after - memory_before) / 2**20, 1),
        "engine_load_redis_s": round(load_redis, 2),
        "engine_load_chroma_s": load_chroma,
        "chroma_batch": batch_used,
        "chroma_fills": fills,
        "item_index_state": state,
        # the old design wrote Chroma (and read it back) before the switch
        "old_design_to_switch_s": round(
            timer.stages.get("publish_users", 0.0) + fills[0]["fill_s"], 2
        )
        if fills
        else None,
        "load_average_before": load_before,
        "load_average_after": _load_average(),
    }
