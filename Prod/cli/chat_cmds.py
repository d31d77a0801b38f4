"""``reco eval chat`` and ``reco bench chat``: chat recommender quality and speed."""

from __future__ import annotations

import os
import time
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


def _limit_threads(threads: int | None) -> None:
    # on a small shared CPU, torch's worker threads spin against each other and against other
    # processes: one query through MiniLM took 87 ms with 1 thread and 409 ms with 2 (2 cores)
    if threads:
        import torch

        torch.set_num_threads(threads)


def _engine(settings, reranker: str | None = None):
    from Prod.chat_reco_engine.service import ChatEngine

    if reranker is not None:
        settings = settings.model_copy(update={"reranker_model": reranker})
    engine = ChatEngine(settings)
    engine.reranker.wait(600)
    return engine


def _render_eval(result: dict) -> None:
    from rich.table import Table

    console.print(
        f"chat retrieval on {result['dataset']}: {result['products']} products, "
        f"reranker {result['reranker']['model']} ({result['reranker']['status']})"
    )
    for name, query_set in result["query_sets"].items():
        table = Table(
            title=f"{name} queries ({query_set['queries']}; filters parsed "
            f"{query_set['filter_parse_accuracy']:.1%}, mean candidates "
            f"{query_set['mean_candidates']}, target retrieved "
            f"{query_set['target_retrieved']:.1%})"
        )
        for column in ("ranking", "hit@5", "MRR", "filter correctness"):
            table.add_column(column)
        for ranker, row in query_set["rankings"].items():
            if row is None:
                table.add_row(ranker, "-", "-", "[yellow]reranker not loaded[/]")
                continue
            correctness = row["filter_correctness"]
            table.add_row(
                ranker,
                f"{row['hit_at_5']:.3f}",
                f"{row['mrr']:.3f}",
                "-" if correctness is None else f"{correctness:.1%}",
            )
        console.print(table)
        console.print("  e.g. " + " | ".join(query_set["examples"]))
    if result.get("dialogues"):
        _render_dialogues(result["dialogues"])
    console.print(dict_table(result["seconds"], title="seconds"))


def _render_dialogues(dialogues: dict) -> None:
    from rich.table import Table

    runs = list(dialogues["runs"])
    table = Table(
        title=f"multi-turn dialogues ({dialogues['conversations']} conversations; "
        f"relevance floor {dialogues['relevance_floor']})"
    )
    table.add_column("kind")
    table.add_column("conversations")
    for run in runs:
        table.add_column(f"passed, {run}")
    for kind, count in dialogues["counts"].items():
        table.add_row(
            kind, str(count), *(f"{dialogues['runs'][run]['passed'][kind]:.1%}" for run in runs)
        )
    console.print(table)
    for run, result in dialogues["runs"].items():
        for kind, failures in result["failures"].items():
            for failure in failures:
                console.print(
                    f"  [yellow]{run} / {kind}[/] {' -> '.join(failure['messages'])}: "
                    f"{failure['why']}"
                )


def _dialogue_runs(engine, products: list, per_kind: int, seed: int) -> dict:
    """The dialogue set through the engine twice: with the loopback LLM stand-in (its filter
    proposals and answers in the loop) and with no LLM reachable (the deterministic path)."""
    from Prod.chat_reco_engine.dialogues import generate_dialogues, run_dialogues
    from Prod.chat_reco_engine.ollama_stub import OllamaStubServer
    from Prod.chat_reco_engine.schemas import ChatRequest
    from Prod.common.supervisor import free_port

    dialogues = generate_dialogues(products, per_kind, seed)
    server = OllamaStubServer().start()
    runs = {}
    try:
        for run, host in (
            ("llm_stand_in", server.url),
            ("no_llm", f"http://127.0.0.1:{free_port()}"),
        ):
            runner = engine.with_settings(engine.settings.model_copy(update={"ollama_host": host}))

            def chat(message: str, session_id: str | None, runner=runner) -> dict:
                request = ChatRequest(message=message, session_id=session_id, k=5)
                return runner.chat(request).model_dump(mode="json")

            with _progress(len(dialogues), f"dialogues ({run})") as bar:
                runs[run] = run_dialogues(chat, dialogues, bar.update)
    finally:
        server.stop()
    floor = engine.catalogue().floor
    return {
        "conversations": len(dialogues),
        "counts": runs["no_llm"]["counts"],
        "relevance_floor": floor.as_dict() if floor else None,
        "runs": runs,
    }


def _run_eval(
    settings,
    dataset_dir: Path,
    n_queries: int,
    max_products: int | None,
    reranker: str | None,
    seed: int,
    threads: int | None,
    dialogues: int = 0,
) -> dict:
    from Prod.chat_reco_engine.evaluation import (
        CROSS_ENCODER,
        RANKERS,
        evaluate_set,
        query_sets,
        temporary_catalogue,
    )

    _limit_threads(threads)
    engine = _engine(settings, reranker)  # load the models before timing anything
    started = time.perf_counter()
    with _progress(0, "indexing products") as bar:
        catalogue = temporary_catalogue(
            engine.settings, dataset_dir, engine.embedder(), max_products, _follow(bar)
        )
        with catalogue as (temp_settings, products):
            indexed = time.perf_counter()
            engine = engine.with_settings(temp_settings)  # the temporary collection
            rankers = tuple(r for r in RANKERS if r != CROSS_ENCODER or engine.reranker.ready)
            results = {}
            for name, queries in query_sets(products, n_queries, seed).items():
                with _progress(len(queries), f"{name} queries") as qbar:
                    results[name] = evaluate_set(engine, queries, rankers, qbar.update, seed)
                    results[name]["rankings"].setdefault(CROSS_ENCODER, None)
            dialogue_results = (
                _dialogue_runs(engine, products, dialogues, seed) if dialogues else None
            )
    finished = time.perf_counter()
    evaluated = sum(r["queries"] for r in results.values())
    return {
        "dataset": str(dataset_dir),
        "products": len(products),
        "reranker": engine.reranker.status(),
        "query_sets": results,
        "dialogues": dialogue_results,
        "seconds": {
            "index": round(indexed - started, 2),
            "evaluate": round(finished - indexed, 2),
            "queries_per_s": round(evaluated / max(finished - indexed, 1e-9), 1),
        },
        "torch_threads": _torch_threads(),
        "seed": seed,
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _render_bench(result: dict) -> None:
    console.print(dict_table(result["ranking"], title="embed + retrieve + rerank + blend (ms)"))
    console.print(dict_table(result["first_token"], title="time to first streamed token (ms)"))
    console.print(
        dict_table(
            {k: v for k, v in result.items() if k not in ("ranking", "first_token")}, title="setup"
        )
    )


def _run_bench(
    settings,
    dataset_dir: Path,
    repeats: int,
    max_products: int | None,
    user_id: str | None,
    threads: int | None,
) -> dict:
    from Prod.chat_reco_engine.evaluation import (
        FREE_TEXT,
        bench_first_token,
        bench_ranking,
        query_sets,
        temporary_catalogue,
        temporary_folder,
    )
    from Prod.chat_reco_engine.rerank import save_minilm_cross_encoder

    _limit_threads(threads)
    engine = _engine(settings)
    reranker_note = f"configured {settings.reranker_model}"
    with temporary_folder() as folder:
        if not engine.reranker.ready:
            # same architecture and cost as ms-marco-MiniLM-L-6-v2, untrained head
            reranker_note = (
                f"MiniLM-L6-sized cross-encoder, untrained head (configured "
                f"{settings.reranker_model!r} not loadable: "
                f"{engine.reranker.status()['error']})"
            )
            settings = settings.model_copy(
                update={"reranker_model": save_minilm_cross_encoder(Path(folder))}
            )
            engine = _engine(settings)
        with temporary_catalogue(settings, dataset_dir, engine.embedder(), max_products) as (
            temp,
            products,
        ):
            engine = engine.with_settings(temp)
            # free-text queries carry no filter, so every request reranks all the candidates
            queries = query_sets(products, 100)[FREE_TEXT]
            ranking = bench_ranking(engine, queries, user_id, repeats)
            first_token = bench_first_token(temp, queries, min(repeats, 30))
    return {
        "ranking": ranking,
        "first_token": first_token,
        "reranker": reranker_note,
        "candidates": settings.retrieval_candidates,
        "products": len(products),
        "dataset": str(dataset_dir),
        "cpus": os.cpu_count(),
        "torch_threads": _torch_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _with_servers(run, *args) -> dict:
    """``run(settings, *args)`` against the configured stores, or temporary ones started (and
    removed) for this run when the configured ones do not answer."""
    from config import get_settings
    from Prod.cli.servers import configured_or_temporary

    with configured_or_temporary(get_settings()) as (settings, which):
        return {**run(settings, *args), "servers": which}


_THREADS_HELP = "torch CPU threads (default: torch's own choice)."


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``reco eval chat`` and ``reco bench chat``."""

    @eval_app.command("chat")
    def eval_chat(
        dataset_dir: Path = typer.Argument(
            ..., exists=True, file_okay=False, help="Canonical dataset folder (ProductsRAG.json)."
        ),
        queries: int = typer.Option(200, min=1, help="Queries per query set (one target each)."),
        max_products: int = typer.Option(20000, min=1, help="Index at most this many products."),
        reranker: str = typer.Option(None, help="Cross-encoder name/path (default: settings)."),
        seed: int = typer.Option(0, help="Seed of the query sampling and the random control."),
        threads: int = typer.Option(None, min=1, help=_THREADS_HELP),
        dialogues: int = typer.Option(
            24, min=0, help="Scripted conversations per dialogue kind (0 = none)."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """hit@5 and MRR (random order / bi-encoder / cross-encoder) and filter correctness on
        two generated query sets: "filtered" ("<brand> <category> <title words> under
        $<price*1.2>") and "free_text" (title and description words only, no filters); then
        the share of multi-turn dialogues passed per kind (refinements, topic switches, resets,
        out-of-catalogue brands and kinds, injections), with the LLM stand-in and without.
        Uses the configured servers, or temporary ones when those do not answer."""
        result = run_reporting_errors(
            lambda: _with_servers(
                _run_eval, dataset_dir, queries, max_products, reranker, seed, threads, dialogues
            )
        )
        emit(result, as_json, _render_eval)

    @bench_app.command("chat")
    def bench_chat(
        dataset_dir: Path = typer.Option(None, "--dataset", help="Default: settings.dataset_dir"),
        repeats: int = typer.Option(100, min=5, help="Timed rankings."),
        max_products: int = typer.Option(20000, min=1, help="Index at most this many."),
        user_id: str = typer.Option(None, help="Personalise for this user (blend step)."),
        threads: int = typer.Option(None, min=1, help=_THREADS_HELP),
        as_json: bool = JsonOption,
    ) -> None:
        """Latency of embed + retrieve 50 + rerank + blend (p50/p99, no LLM; free-text queries,
        so all candidates are reranked) and time to first streamed token with the loopback
        Ollama stand-in (ollama_stub). Uses the configured servers, or temporary ones when those
        do not answer."""
        from config import get_settings

        folder = dataset_dir or get_settings().dataset_dir
        result = run_reporting_errors(
            lambda: _with_servers(_run_bench, folder, repeats, max_products, user_id, threads)
        )
        emit(result, as_json, _render_bench)
