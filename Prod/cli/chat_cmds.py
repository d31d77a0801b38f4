"""``reco eval chat`` and ``reco bench chat``: chat recommender quality and speed."""

from __future__ import annotations

from pathlib import Path

import typer

from Prod.cli.output import JsonOption, console, dict_table, emit, run_reporting_errors


def _progress(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="it", leave=False)


def _follow(bar):
    """A ``progress(done, total)`` callback that drives a tqdm bar."""

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update


def _engine(settings, reranker: str | None):
    from Prod.chat_reco_engine.service import ChatEngine

    if reranker is not None:
        settings = settings.model_copy(update={"reranker_model": reranker})
    engine = ChatEngine(settings)
    engine.reranker.wait(600)
    return engine


def _render_eval(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"chat retrieval on {result['dataset']} ({result['queries']} queries)")
    for column in ("ranking", "hit@5", "MRR", "filters parsed", "filter correctness"):
        table.add_column(column)
    for mode in ("bi_encoder", "cross_encoder"):
        row = result[mode]
        if row is None:
            table.add_row(mode, "-", "-", "-", f"[yellow]{result['reranker']['status']}[/]")
            continue
        table.add_row(mode, f"{row['hit_at_5']:.3f}", f"{row['mrr']:.3f}",
                      f"{row['filter_parse_accuracy']:.1%}", f"{row['filter_correctness']:.1%}")
    console.print(table)
    console.print(dict_table(result["reranker"], title="reranker"))


def _run_eval(dataset_dir: Path, n_queries: int, max_products: int | None,
              reranker: str | None) -> dict:  # fmt: skip
    from config import get_settings
    from Prod.chat_reco_engine.evaluation import evaluate, make_queries, temporary_catalogue

    settings = get_settings()
    engine_probe = _engine(settings, reranker)  # load models before timing anything
    embedder = engine_probe.embedder()
    with _progress(0, "indexing products") as bar:
        catalogue = temporary_catalogue(settings, dataset_dir, embedder, max_products, _follow(bar))
        with catalogue as (temp_settings, products):
            engine = _engine(temp_settings, reranker)
            engine.reranker = engine_probe.reranker  # same loaded model
            queries = make_queries(products, n_queries)
            results = {}
            for mode, rerank in (("bi_encoder", False), ("cross_encoder", True)):
                if rerank and not engine.reranker.ready:
                    results[mode] = None
                    continue
                with _progress(len(queries), f"queries ({mode})") as qbar:
                    results[mode] = evaluate(engine, queries, rerank, qbar.update)
    return {"dataset": str(dataset_dir), "products": len(products), "queries": len(queries),
            "reranker": engine.reranker.status(), **results}  # fmt: skip


def _render_bench(result: dict) -> None:
    console.print(dict_table(result["ranking"], title="retrieve + rerank + blend (ms)"))
    console.print(dict_table(result["first_token"], title="time to first streamed token (ms)"))
    console.print(dict_table({k: v for k, v in result.items()
                              if k not in ("ranking", "first_token")}, title="setup"))  # fmt: skip


def _run_bench(dataset_dir: Path, repeats: int, max_products: int | None,
               user_id: str | None) -> dict:  # fmt: skip
    from config import get_settings
    from Prod.chat_reco_engine.evaluation import (
        bench_first_token,
        bench_ranking,
        make_queries,
        temporary_catalogue,
        temporary_folder,
    )
    from Prod.chat_reco_engine.rerank import save_tiny_cross_encoder

    settings = get_settings()
    engine = _engine(settings, None)
    reranker_note = f"configured {settings.reranker_model}"
    with temporary_folder() as folder:
        if not engine.reranker.ready:
            reranker_note = (f"tiny random cross-encoder (configured {settings.reranker_model!r} "
                             f"not loadable: {engine.reranker.status()['error']})")  # fmt: skip
            settings = settings.model_copy(
                update={"reranker_model": save_tiny_cross_encoder(Path(folder))})
            engine = _engine(settings, None)
        embedder = engine.embedder()
        with temporary_catalogue(settings, dataset_dir, embedder, max_products) as (temp, products):
            bench_engine = _engine(temp, None)
            queries = make_queries(products, 100)
            ranking = bench_ranking(bench_engine, queries, user_id, repeats)
            first_token = bench_first_token(temp, queries, min(repeats, 30))
    import os

    return {"ranking": ranking, "first_token": first_token, "reranker": reranker_note,
            "candidates": settings.retrieval_candidates, "products": len(products),
            "dataset": str(dataset_dir), "cpus": os.cpu_count()}  # fmt: skip


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``reco eval chat`` and ``reco bench chat``."""

    @eval_app.command("chat")
    def eval_chat(
        dataset_dir: Path = typer.Argument(..., exists=True, file_okay=False,
                                           help="Canonical dataset folder (ProductsRAG.json)."),
        queries: int = typer.Option(200, min=1, help="Generated queries (one target each)."),
        max_products: int = typer.Option(
            20000, min=1, help="Index at most this many products."),
        reranker: str = typer.Option(None, help="Cross-encoder name/path (default: settings)."),
        as_json: bool = JsonOption,
    ) -> None:
        """hit@5 and MRR with and without reranking, and filter correctness, on generated
        queries ("<brand> <category> <title words> under $<price*1.2>")."""
        result = run_reporting_errors(
            lambda: _run_eval(dataset_dir, queries, max_products, reranker))
        emit(result, as_json, _render_eval)

    @bench_app.command("chat")
    def bench_chat(
        dataset_dir: Path = typer.Option(None, "--dataset", help="Default: settings.dataset_dir"),
        repeats: int = typer.Option(100, min=5, help="Timed rankings."),
        max_products: int = typer.Option(20000, min=1, help="Index at most this many."),
        user_id: str = typer.Option(None, help="Personalise for this user (blend step)."),
        as_json: bool = JsonOption,
    ) -> None:
        """Latency of retrieve 50 + rerank + blend (p50/p99, no LLM) and time to first
        streamed token with the loopback Ollama stand-in (ollama_stub)."""
        from config import get_settings

        folder = dataset_dir or get_settings().dataset_dir
        result = run_reporting_errors(lambda: _run_bench(folder, repeats, max_products, user_id))
        emit(result, as_json, _render_bench)
