"""``reco bench serving``: the ALS serving engine's latency and throughput against the naive
design (Redis JSON + Chroma query per request), on a synthetic model, in one run."""

from __future__ import annotations

import typer

from Prod.cli.output import JsonOption, console, dict_table, emit, err_console, run_reporting_errors


def _render(result: dict) -> None:
    console.print(dict_table(result, title="serving benchmark"))
    targets = {
        "p50 <= 1.5 ms": result["p50_ms"] <= 1.5,
        "p99 <= 10 ms": result["p99_ms"] <= 10,
        ">= 1000 req/s at c32": result["rps_c32"] >= 1000,
        "no errors": result["errors"] == 0,
        ">= 3x naive": (result["speedup"] or 0) >= 3,
    }
    for name, met in targets.items():
        console.print(f"  {'[green]met[/]' if met else '[red]missed[/]'}  {name}")


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    @bench_app.command("serving")
    def bench_serving(
        items: int = typer.Option(20_000, min=100, help="Items in the synthetic model."),
        factors: int = typer.Option(64, min=2, max=512, help="Latent factors."),
        users: int = typer.Option(2_000, min=10, help="Users (each with seen items)."),
        seen: int = typer.Option(20, min=0, help="Seen items per user (removed from results)."),
        requests: int = typer.Option(3_000, min=10, help="Requests per load phase."),
        concurrency: int = typer.Option(32, min=1, help="Connections in the throughput phase."),
        naive_requests: int = typer.Option(500, min=10, help="Requests to the naive design."),
        max_seconds: float = typer.Option(60.0, min=1, help="Time limit of each load phase."),
        workers: int = typer.Option(1, min=1, max=8, help="Engine worker processes."),
        as_json: bool = JsonOption,
    ) -> None:
        """Start temporary stores, publish a synthetic model, load-test engine and naive design."""
        from Prod.als_reco_engine.bench import BenchConfig, run_serving_bench

        cfg = BenchConfig(
            items=items,
            factors=factors,
            users=users,
            seen_per_user=seen,
            requests=requests,
            concurrency=concurrency,
            naive_requests=naive_requests,
            max_seconds=max_seconds,
            workers=workers,
        )

        def progress(message: str) -> None:
            err_console.print(f"[dim]{message}[/]")

        result = run_reporting_errors(lambda: run_serving_bench(cfg, progress))
        emit(result, as_json, _render)
