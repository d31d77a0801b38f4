"""``reco train``, ``reco rollback``, ``reco train-status``: the trainer service's code path."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from Prod.cli.output import (
    JsonOption,
    console,
    dict_table,
    emit,
    err_console,
    run_reporting_errors,
)

# exit codes of `reco train`: 0 trained or skipped, 1 failed, 2 another trainer holds the lock
EXIT_FAILED, EXIT_LOCKED = 1, 2


def _render_run(result: dict) -> None:
    colours = {"active": "green", "skipped": "yellow", "locked": "yellow"}
    colour = colours.get(result["status"], "red")
    console.print(
        f"[bold {colour}]{result['status']}[/] version {result['version_id'] or '-'}"
        + (f" ({result['reason']})" if result["reason"] else "")
    )
    if result["error"]:
        console.print(f"[red]error:[/] {result['error']}")
    for title in ("counts", "metrics", "durations"):
        if result[title]:
            console.print(dict_table(result[title], title=title))
    if result["deleted_versions"]:
        console.print(f"deleted old versions: {', '.join(result['deleted_versions'])}")


class StageProgress:
    """A ``run_training`` stage hook that draws one bar per stage on ``console`` (stderr): the
    running stage pulses, a finished one shows full with its time. The hook only hears a stage
    start, so a stage ends when the next begins, the last one when :meth:`finish` is called."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description:<14}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._tasks: dict[str, int] = {}
        self._current: str | None = None

    def __call__(self, stage: str) -> None:
        self._end_current()
        self._current = stage
        self._tasks[stage] = self.progress.add_task(stage, total=None)  # pulses while it runs

    def _end_current(self, failed: bool = False) -> None:
        if self._current is None:
            return
        task = self._tasks[self._current]
        if failed:  # left unfinished, in red
            self.progress.update(task, description=f"[red]{self._current} (failed)")
        else:
            self.progress.update(task, total=1, completed=1)
        self.progress.stop_task(task)
        self._current = None

    def finish(self, failed: bool = False) -> None:
        """End the running stage (as failed: the run stopped in it)."""
        self._end_current(failed)

    @property
    def started(self) -> list[str]:
        """Stages begun so far, in order."""
        return list(self._tasks)


@contextmanager
def stage_progress(console: Console) -> Iterator[StageProgress | None]:
    """A :class:`StageProgress` while ``console`` is a terminal (None otherwise: no output).
    Log lines written meanwhile go above the bars, not through them."""
    if not console.is_terminal:
        yield None
        return
    bars = StageProgress(console)
    real = sys.stderr
    with bars.progress:
        # the live display swaps sys.stderr for a proxy that prints above it: point the log
        # handlers holding the real stderr at that proxy while the bars are drawn
        moved = [
            h
            for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and h.stream is real
        ]
        for handler in moved:
            handler.setStream(sys.stderr)
        try:
            yield bars
        finally:
            bars.finish()
            for handler in moved:
                handler.setStream(real)


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
        with stage_progress(err_console) as bars:
            result = run_reporting_errors(
                lambda: run_training(settings, force=force, evaluate=evaluate, on_stage=bars)
            ).to_dict()
            if bars is not None:
                bars.finish(failed=result["status"] == "failed")
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
        emit(
            report,
            as_json,
            lambda r: console.print(
                dict_table(
                    {
                        k: v
                        and {
                            f: v.get(f)
                            for f in ("version_id", "status", "trained_at", "metrics", "error")
                            if v.get(f) is not None
                        }
                        for k, v in r.items()
                    },
                    title="trainer",
                )
            ),
        )
