"""``reco bench faults``: registers the fault-injection run of :mod:`Prod.bench.faults`."""

from __future__ import annotations

import typer

from Prod.cli.output import JsonOption, console, emit, err_console, run_reporting_errors

_COLUMNS = {  # report key -> header, short so that the table fits 80 columns
    "fault": "fault",
    "requests": "requests",
    "non_2xx": "non-2xx",
    "status_503": "503",
    "server_errors": "5xx*",
    "transport_errors": "no ans",
    "acknowledged": "acked",
    "acknowledged_missing": "lost",
    "down_s": "down s",
    "recovery_s": "recov s",
}
_LEGEND = (
    "5xx*: server errors other than 503; no ans: no HTTP answer; acked: interactions answered "
    "2xx; lost: acked but not in Postgres; recov s: from the store answering again (trainer: "
    "from the kill) until every endpoint answers 2xx (trainer: a new run accepted and served)"
)


def _render(result: dict) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title=f"fault injection (setup {result['setup_s']} s, total {result['total_s']} s, "
        f"load {result['load_avg_1m']})",
    )
    for key, header in _COLUMNS.items():
        table.add_column(header, justify="left" if key == "fault" else "right", no_wrap=True)
    for row in result["faults"]:
        table.add_row(
            *(
                "[red]none[/]"
                if key == "recovery_s" and not row["recovered"]
                else "-"
                if row[key] is None
                else str(row[key])
                for key in _COLUMNS
            )
        )
    console.print(table)
    console.print(f"  {_LEGEND}", style="dim")
    for row in result["faults"]:
        failed = {e: c["non_2xx"] for e, c in row["by_endpoint"].items() if c["non_2xx"]}
        console.print(f"  {row['fault']}: non-2xx by endpoint {failed or 'none'}; {row['detail']}")
    for name, met in result["targets"].items():
        if name != "all_met":
            console.print(f"  {'[green]met[/]' if met else '[red]missed[/]'}  {name}")


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    @bench_app.command("faults")
    def bench_faults(
        fault: list[str] = typer.Option(
            None,
            "--fault",
            help="Fault to inject (repeatable): postgres, redis, chroma, "
            "trainer; default all four.",
        ),
        seconds: float = typer.Option(8.0, min=1, help="Seconds a store stays down under load."),
        concurrency: int = typer.Option(4, min=1, max=64, help="Client threads."),
        rate: float = typer.Option(40.0, min=1, help="Requests/s over all clients, at most."),
        max_recovery: float = typer.Option(60.0, min=5, help="Seconds to wait for recovery."),
        as_json: bool = JsonOption,
    ) -> None:
        """Kill each store under load (and a trainer mid-publish) on temporary loopback servers;
        count non-2xx, server errors, acknowledged writes missing and recovery time."""
        from Prod.bench.faults import FAULTS, FaultsConfig, run_faults_bench

        cfg = FaultsConfig(
            faults=tuple(fault or FAULTS),
            seconds=seconds,
            concurrency=concurrency,
            rate=rate,
            max_recovery_s=max_recovery,
        )

        def progress(message: str) -> None:
            err_console.print(f"[dim]{message}[/]")

        result = run_reporting_errors(lambda: run_faults_bench(cfg, progress))
        emit(result, as_json, _render)
        if not result["targets"]["all_met"]:
            raise typer.Exit(1)
