"""``reco``: the one command-line front door. Each area registers its own subcommands."""

from __future__ import annotations

import typer

from Prod.common.hub import prefer_offline_hub

prefer_offline_hub()  # never wait a minute on a hub from a CLI

from Prod.cli import (  # noqa: E402
    als_cmds,
    bench_cmds,
    chat_cmds,
    data_cmds,
    export_cmds,
    infra_cmds,
    ingest_cmds,
    report_cmds,
    trainer_cmds,
    users_cmds,
)

app = typer.Typer(
    help="Hybrid recommendation platform: data, infrastructure, training, evaluation, benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks (medians measured in one run).", no_args_is_help=True)
eval_app = typer.Typer(help="Quality evaluations.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(eval_app, name="eval")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"reco {version('reco-platform')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Hybrid recommendation platform: data, infrastructure, training, evaluation, benchmarks."""


for module in (
    infra_cmds,
    data_cmds,
    ingest_cmds,
    als_cmds,
    trainer_cmds,
    chat_cmds,
    bench_cmds,
    users_cmds,
    export_cmds,
    report_cmds,
):
    module.register(app, bench_app, eval_app)


if __name__ == "__main__":
    app()
