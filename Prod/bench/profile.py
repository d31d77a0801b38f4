"""`reco bench profile`: preference summaries (GET /users/{user_id}/profile) on a dataset's users.

Latency p50/p99 of a profile written by the template (the LLM unreachable), served from the
Redis cache, and written by an LLM (``--llm local/smollm2`` serves the packaged SmolLM2 on
loopback first); for the LLM, the share of its summaries the grounding guard let through and its
reasons for the others. The users are the ``--users`` with the most interactions among a seeded
sample of the dataset's users with at least 3. Needs the dataset in PostgreSQL: temporary
servers are loaded with it; configured ones must already hold it (`reco ingest`).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from config import ROOT, Settings
from Prod.bench.chat import _engine, percentile, temporary_catalogue
from Prod.chat_reco_engine.chat_models import LLMEndpoint
from Prod.chat_reco_engine.llm import GUARD, LLM
from Prod.common.db import session_scope
from Prod.common.errors import IngestError
from Prod.common.stores import redis_for
from Prod.orchestrate.local_infra import free_port

LOCAL = "local"
_EXAMPLES = 3


def _users(settings: Settings, n: int, seed: int) -> list[str]:
    with session_scope(settings.database_url) as db:
        rows = db.execute(
            text(
                "select user_id, count(*) from interaction group by user_id having count(*) >= 3 "
                "order by user_id"
            )
        ).all()
    if not rows:
        raise IngestError("no user with 3+ interactions in PostgreSQL: load the dataset first")
    rng = np.random.default_rng(seed)
    sample = [rows[int(i)] for i in rng.permutation(len(rows))[: max(4 * n, n)]]
    return [u for u, _ in sorted(sample, key=lambda r: (-r[1], r[0]))[:n]]


def _forget(settings: Settings, user_id: str) -> None:
    client = redis_for(settings)
    for key in client.scan_iter(f"reco:profile:{user_id}:*"):
        client.delete(key)


def _timed(engine, user_id: str) -> tuple[float, Any]:
    started = time.perf_counter()
    profile = engine.profile(user_id)
    return (time.perf_counter() - started) * 1000, profile


def _ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    return {"p50": round(percentile(values, 50), 2), "p99": round(percentile(values, 99), 2)}


def _llm_endpoint(settings: Settings, llm: str, stack, threads, max_tokens) -> LLMEndpoint:
    endpoint = LLMEndpoint.parse(llm, LLMEndpoint.from_settings(settings))
    if endpoint.provider != LOCAL:
        return endpoint
    from Prod.llm_server import SMOLLM2, LocalModel, LocalServer, smollm2_gguf

    model = LocalModel(smollm2_gguf(), SMOLLM2, threads, ROOT / ".local" / "llm")
    server = stack.enter_context(LocalServer(model, free_port()))
    return LLMEndpoint("openai", SMOLLM2, server.base_url, None, 300.0, max_tokens)


def _with_llm(settings: Settings, endpoint: LLMEndpoint, max_tokens: int) -> Settings:
    return settings.model_copy(
        update={
            "llm_provider": endpoint.provider,
            "llm_model": endpoint.model,
            "llm_base_url": endpoint.base_url,
            "llm_max_tokens": max_tokens,
            "ollama_timeout_s": max(settings.ollama_timeout_s, 300.0),
            "reranker_model": "",
        }
    )


def run_profile_bench(
    settings: Settings,
    dataset_dir: Path,
    n_users: int,
    llm: str | None,
    seed: int,
    threads: int | None,
    max_tokens: int = 60,
    load: bool = False,
    say: Callable[[str], None] = lambda _message: None,
) -> dict[str, Any]:
    """The measures of the module docstring; ``load``: ingest ``dataset_dir`` into PostgreSQL
    first (temporary servers); ``say`` follows the progress."""
    if load:
        from Prod.datasets.ingest.postgres import ingest_postgres

        say(f"loading {dataset_dir} into PostgreSQL")
        ingest_postgres(settings.database_url, dataset_dir)
    users = _users(settings, n_users, seed)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        down = f"http://127.0.0.1:{free_port()}"  # nothing listens: the template
        template_settings = settings.model_copy(
            update={"llm_provider": "ollama", "llm_base_url": down, "reranker_model": ""}
        )
        engine = _engine(template_settings)
        say("embedding the catalogue (the guard's brand and category names)")
        temp, products = stack.enter_context(
            temporary_catalogue(settings, dataset_dir, engine.embedder(), None)
        )
        engine = engine.with_settings(
            template_settings.model_copy(update={"products_collection": temp.products_collection})
        )
        template_ms, cached_ms = [], []
        for user in users:
            _forget(settings, user)
            ms, profile = _timed(engine, user)
            template_ms.append(ms)
            cached_ms.append(_timed(engine, user)[0])
        report: dict[str, Any] = {
            "dataset": str(dataset_dir),
            "users": len(users),
            "products": len(products),
            "template_ms": _ms(template_ms),
            "cached_ms": _ms(cached_ms),
            "template_example": profile.summary,
        }
        if llm:
            endpoint = _llm_endpoint(settings, llm, stack, threads, max_tokens)
            llm_settings = _with_llm(settings, endpoint, max_tokens).model_copy(
                update={"products_collection": temp.products_collection}
            )
            engine = engine.with_settings(llm_settings)
            llm_ms, producers, examples = [], Counter(), []
            for user in users:
                _forget(settings, user)
                ms, profile = _timed(engine, user)
                llm_ms.append(ms)
                say(f"{user}: {profile.generated_by} in {ms / 1000:.1f} s")
                producers[profile.generated_by] += 1
                if len(examples) < _EXAMPLES:
                    examples.append(
                        {"user_id": user, "by": profile.generated_by, "summary": profile.summary}
                    )
                _forget(settings, user)
            answered = producers[LLM] + producers[GUARD]
            reasons = {
                r: int(c._value.get())
                for r, c in engine.metrics.profile_ungrounded._metrics.items()
                if c._value.get()
            }
            report.update(
                llm=endpoint.label,
                max_tokens=max_tokens,
                llm_ms=_ms(llm_ms),
                producers=dict(producers),
                guard_passed_share=round(producers[LLM] / answered, 4) if answered else None,
                guard_reasons={k[0]: v for k, v in reasons.items()},
                llm_examples=examples,
            )
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report
