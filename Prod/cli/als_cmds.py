"""``reco evaluate`` and ``reco tune``: the ALS research tools of :mod:`Modeling.RecoSystem`.

The CLI registers them from Modeling (imported inside the commands): ``reco`` is the one front
door, Modeling ships in the same package, and the dependency runs one way (Modeling never imports
the CLI; services never import Modeling). ``reco train`` belongs to the trainer's module, ``reco
bench als`` to :mod:`Prod.bench.als`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from Prod.cli.output import JsonOption, console, emit, err_console, run_reporting_errors

PROTOCOL_HELP = "user-random | user-last | ms-stratified-item (MS Recommenders benchmark split)."


def _params(params_file: Path | None):
    from config import get_settings
    from Prod.common.als import ALSParams

    path = params_file or get_settings().als_params_path
    if params_file is None and not Path(path).is_file():
        err_console.print(f"[yellow]no params file at {path}; using ALSParams defaults[/]")
        return ALSParams(), None
    return ALSParams.from_file(path), str(path)


def _threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _metrics_table(models: dict[str, dict[str, Any]], k: int, title: str):
    from rich.table import Table

    columns = [f"{m}@{k}" for m in ("ndcg", "precision", "recall", "map", "hit", "coverage")]
    table = Table(title=title)
    table.add_column("model", style="bold cyan")
    for column in [*columns, "fit_s"]:
        table.add_column(column, justify="right")
    for name, metrics in models.items():
        table.add_row(
            name,
            *[f"{metrics.get(c, float('nan')):.4f}" for c in columns],
            f"{metrics.get('fit_s', float('nan')):.2f}",
        )
    return table


def evaluate(
    dataset_dir: Path = typer.Argument(..., help="Canonical dataset folder (interactions.csv)."),
    protocol: str = typer.Option("ms-stratified-item", "--protocol", help=PROTOCOL_HELP),
    k: int = typer.Option(10, "--k", min=1, help="Cut-off of the ranking metrics."),
    params_file: Path | None = typer.Option(
        None, "--params", help="ALS params JSON (default: the settings' als_params_path)."
    ),
    models: str = typer.Option("als,popularity,implicit", help="Comma-separated models."),
    seed: int = typer.Option(42, help="Split seed."),
    threads: int = typer.Option(1, help="torch threads (1 is fastest for small data)."),
    out: Path | None = typer.Option(None, "--out", help="Results folder (default: results/)."),
    as_json: bool = JsonOption,
) -> None:
    """Split a dataset, fit ALS / popularity / implicit on train, report top-k metrics on test."""

    def run() -> dict:
        from Modeling.RecoSystem.evaluate import evaluate_dataset
        from Modeling.RecoSystem.report import metrics_frame, plot_metrics, run_folder, write_table

        _threads(threads)
        params, source = _params(params_file)
        names = tuple(m.strip() for m in models.split(",") if m.strip())
        with console.status(f"evaluating {', '.join(names)} on {dataset_dir} ({protocol})"):
            result = evaluate_dataset(dataset_dir, protocol, k, params, names, seed)
        folder = run_folder("evaluate", dataset_dir, out)
        frame = metrics_frame(result["models"])
        files = write_table(frame, folder, "metrics")
        files["plot"] = str(
            plot_metrics(frame, k, folder / "metrics.png", f"{Path(dataset_dir).name} ({protocol})")
        )
        result.update(params_file=source, files=files)
        return result

    result = run_reporting_errors(run)
    if as_json:
        emit(
            {**result["models"], "meta": {k_: v for k_, v in result.items() if k_ != "models"}},
            True,
        )
        return
    console.print(_metrics_table(result["models"], k, f"{dataset_dir} - {protocol}"))
    folder = Path(result["files"]["csv"]).parent
    console.print(
        f"users evaluated {result['users_evaluated']}, train "
        f"{result['train_interactions']}, test {result['test_interactions']}; "
        f"files in {folder}"
    )


def tune(
    dataset_dir: Path = typer.Argument(..., help="Canonical dataset folder (interactions.csv)."),
    out_file: Path | None = typer.Option(
        None, "--out", help="Where to write the best params (default: settings' als_params_path)."
    ),
    trials: int = typer.Option(30, "--trials", min=1, help="Random-search trials for ALS."),
    protocol: str = typer.Option("ms-stratified-item", "--protocol", help=PROTOCOL_HELP),
    k: int = typer.Option(10, "--k", min=1, help="Cut-off of the nDCG the search maximises."),
    seed: int = typer.Option(42, help="Split and search seed."),
    with_implicit: bool = typer.Option(True, help="Also tune implicit's ALS (trials/2)."),
    threads: int = typer.Option(1, help="torch threads (1 is fastest for small data)."),
    results_dir: Path | None = typer.Option(None, "--results", help="Results folder."),
    as_json: bool = JsonOption,
) -> None:
    """Random search on a validation split carved from TRAINING data; writes the best params."""

    def run() -> dict:
        from tqdm import tqdm

        from config import get_settings
        from Modeling.RecoSystem.tune import tune_dataset
        from Prod.common.als import ALSParams

        _threads(threads)
        bar = tqdm(total=None, desc="trials", disable=as_json, leave=False)

        def progress(done: int, total: int, row: dict) -> None:
            bar.total = total
            bar.set_postfix(model=row["model"], ndcg=f"{row[f'ndcg@{k}']:.4f}")
            bar.update(1)

        result = tune_dataset(
            dataset_dir,
            protocol,
            trials,
            k,
            seed,
            tune_implicit=with_implicit,
            out_dir=results_dir,
            progress=progress,
        )
        bar.close()
        target = out_file or get_settings().als_params_path
        ALSParams.from_dict(result["best_params"]).to_file(
            target,
            dataset=Path(dataset_dir).resolve().name,
            protocol=protocol,
            validation=result["best_validation"],
            test=result["test"].get("als"),
        )
        result["params_file"] = str(target)
        return result

    result = run_reporting_errors(run)
    if as_json:
        emit(result, True)
        return
    console.print(_metrics_table(result["test"], k, f"test metrics with tuned params ({protocol})"))
    console.print(f"best params -> {result['params_file']}: {result['best_params']}")
    console.print(f"trials table, plot: {Path(result['files']['csv']).parent}")


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add this area's commands to ``reco``."""
    app.command("evaluate")(evaluate)
    app.command("tune")(tune)
