"""``reco train``, ``reco rollback``, ``reco train-status``: the trainer service's code path."""

from __future__ import annotations

import typer

from Prod.cli.output import JsonOption, console, dict_table, emit, run_reporting_errors

# exit codes of `reco train`: 0 trained or skipped, 1 failed, 2 another trainer holds the lock
EXIT_FAILED, EXIT_LOCKED = 1, 2


def _render_run(result: dict) -> None:
    colours = {"active": "green", "skipped": "yellow", "locked": "yellow"}
    colour = colours.get(result["status"], "red")
    console.print(f"[bold {colour}]{result['status']}[/] version {result['version_id'] or '-'}"
                  + (f" ({result['reason']})" if result["reason"] else ""))  # fmt: skip
    if result["error"]:
        console.print(f"[red]error:[/] {result['error']}")
    for title in ("counts", "metrics", "durations"):
        if result[title]:
            console.print(dict_table(result[title], title=title))
    if result["deleted_versions"]:
        console.print(f"deleted old versions: {', '.join(result['deleted_versions'])}")


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add this area's commands to ``reco``."""

    @app.command("train")
    def train(
        force: bool = typer.Option(False, "--force", help="Train even without new interactions."),
        evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Holdout evaluation fit."),
        as_json: bool = JsonOption,
    ) -> None:
        """One training run now (same code path as the trainer service): train, publish, switch."""
        from config import get_settings
        from Prod.als_trainer.service import run_training
        from Prod.common.logs import configure_logging

        settings = get_settings()
        configure_logging("reco-train", settings.log_level)
        result = run_reporting_errors(
            lambda: run_training(settings, force=force, evaluate=evaluate)
        ).to_dict()
        emit(result, as_json, _render_run)
        if result["status"] == "failed":
            raise typer.Exit(EXIT_FAILED)
        if result["status"] == "locked":
            raise typer.Exit(EXIT_LOCKED)

    @app.command("rollback")
    def rollback_cmd(as_json: bool = JsonOption) -> None:
        """Re-activate the previous model version (swaps active and previous)."""
        from config import get_settings
        from Prod.als_trainer.service import rollback

        emit(run_reporting_errors(lambda: rollback(get_settings())), as_json)

    @app.command("train-status")
    def train_status(as_json: bool = JsonOption) -> None:
        """Active and previous model versions, last finished run, run in progress."""
        from config import get_settings
        from Prod.als_trainer.service import read_status

        report = run_reporting_errors(lambda: read_status(get_settings()))
        emit(report, as_json, lambda r: console.print(dict_table(
            {k: v and {f: v.get(f) for f in ("version_id", "status", "trained_at", "metrics",
                                             "error") if v.get(f) is not None}
             for k, v in r.items()}, title="trainer")))  # fmt: skip
