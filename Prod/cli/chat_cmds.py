"""``reco eval chat``: registers the chat recommender's quality run (:mod:`Prod.bench.chat`)."""

from __future__ import annotations

from pathlib import Path

import typer

from Prod.cli.output import JsonOption, console, dict_table, emit, run_reporting_errors
from Prod.cli.servers import with_servers


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


_THREADS_HELP = "torch CPU threads (default: torch's own choice)."


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``reco eval chat``."""

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
        llm: str = typer.Option(
            None,
            help="Measure this chat model instead (provider/model, e.g. openai/gpt-4o-mini; "
            "local/smollm2 serves the packaged SmolLM2): grounded share, valid/kept filter "
            "proposals, TTFT and answer p50/p99 (Prod.bench.chat_llm).",
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """hit@5 and MRR (random order / bi-encoder / cross-encoder) and filter correctness on
        two generated query sets: "filtered" ("<brand> <category> <title words> under
        $<price*1.2>") and "free_text" (title and description words only, no filters); then
        the share of multi-turn dialogues passed per kind (refinements, topic switches, resets,
        out-of-catalogue brands and kinds, injections), with the LLM stand-in and without.
        Uses the configured servers, or temporary ones when those do not answer."""
        if llm:
            from Prod.bench.chat_llm import run_llm_eval

            args = (dataset_dir, llm, queries, max_products, seed, threads)
            result = run_reporting_errors(lambda: with_servers(run_llm_eval, *args))
            emit(result, as_json, lambda r: console.print_json(data=r))
            return
        from Prod.bench.chat import run_chat_eval

        result = run_reporting_errors(
            lambda: with_servers(
                run_chat_eval,
                dataset_dir,
                queries,
                max_products,
                reranker,
                seed,
                threads,
                dialogues,
            )
        )
        emit(result, as_json, _render_eval)
