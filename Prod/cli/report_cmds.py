"""``reco ab start|stop|status`` (the A/B test of two model versions, :mod:`Prod.common.experiment`)
and ``reco report ab`` (its outcome, :mod:`Prod.batch.ab_report`)."""

from __future__ import annotations

import typer

from Prod.cli.output import JsonOption, console, dict_table, emit, run_reporting_errors


def _redis():
    from config import get_settings
    from Prod.common.stores import redis_for

    return redis_for(get_settings())


def _render_experiment(result: dict) -> None:
    console.print(dict_table(result, title="A/B test"))


def _render_report(report: dict) -> None:
    from rich.table import Table

    console.print(
        f"[bold]{report['experiment_id']}[/]: arm B = {report['version_b']} "
        f"(share {report['share_b']}), responses served {report['since']} .. {report['until']}, "
        f"outcome window {report['window_s']} s, {report['confidence']:.0%} intervals, per user"
    )
    table = Table("arm", "users", "responses", "click rate", "purchase rate", "served versions")
    for name, arm in report["arms"].items():
        cells = []
        for metric in ("click_rate", "purchase_rate"):
            m = arm[metric]
            rate = "-" if m["rate"] is None else f"{m['rate']:.2%}"
            cells.append(f"{rate} [{m['ci'][0]:.2%}, {m['ci'][1]:.2%}]")
        versions = ", ".join(f"{v}: {n}" for v, n in arm["served_versions"].items()) or "-"
        table.add_row(name.upper(), str(arm["users"]), str(arm["responses"]), *cells, versions)
    console.print(table)
    for metric, diff in report["b_minus_a"].items():
        if diff["difference"] is None:
            console.print(f"{metric} B - A: an arm has no users yet")
            continue
        verdict = "[green]significant[/]" if diff["significant"] else "not significant"
        console.print(
            f"{metric} B - A: {diff['difference']:+.2%} "
            f"[{diff['ci'][0]:+.2%}, {diff['ci'][1]:+.2%}] {verdict}"
        )


def _report(experiment_id, since, until, window, confidence) -> dict:
    from datetime import datetime, timezone

    from config import get_settings
    from Prod.batch.ab_report import ab_report, parse_time, parse_window
    from Prod.common.db import get_engine
    from Prod.common.errors import NotFound
    from Prod.common.experiment import find_experiment, read_experiment

    now = datetime.now(timezone.utc)
    span = {
        "since": parse_time(since, now=now, name="--since") if since else None,
        "until": parse_time(until, now=now, name="--until") if until else None,
    }
    client = _redis()
    experiment = (
        find_experiment(client, experiment_id) if experiment_id else read_experiment(client)
    )
    if experiment is None:
        raise NotFound("no A/B test was ever started (reco ab start --version-b ...)")
    return ab_report(
        get_engine(get_settings().database_url),
        experiment,
        window=parse_window(window),
        confidence=confidence,
        **span,
    )


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``reco ab ...`` and ``reco report ab`` to ``reco``."""
    ab_app = typer.Typer(
        help="A/B test of two model versions: arm B (a pinned published version) serves a "
        "stable share of users, chosen by a hash of their id; arm A the active version.",
        no_args_is_help=True,
    )
    report_app = typer.Typer(help="Reports on what was served.", no_args_is_help=True)
    app.add_typer(ab_app, name="ab")
    app.add_typer(report_app, name="report")

    @ab_app.command("start")
    def start(
        version_b: str = typer.Option(..., "--version-b", help="A published model version."),
        share_b: float = typer.Option(0.5, "--share-b", help="Share of users in arm B (0-1)."),
        experiment_id: str | None = typer.Option(
            None, "--id", help="Experiment id (default: ab-<time>-<random>); it seeds the hash."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Start serving --version-b to --share-b of the users (every engine, within a second);
        the trainer keeps that version while the test runs."""
        from dataclasses import asdict

        from Prod.common.experiment import start_experiment

        result = run_reporting_errors(
            lambda: asdict(
                start_experiment(
                    _redis(), version_b=version_b, share_b=share_b, experiment_id=experiment_id
                )
            )
        )
        emit(result, as_json, _render_experiment)

    @ab_app.command("stop")
    def stop(as_json: bool = JsonOption) -> None:
        """Stop the running test: every user gets the active version again (kept for reports)."""
        from dataclasses import asdict

        from Prod.common.experiment import stop_experiment

        emit(run_reporting_errors(lambda: asdict(stop_experiment(_redis()))), as_json)

    @ab_app.command("status")
    def status(as_json: bool = JsonOption) -> None:
        """The running or last A/B test."""
        from dataclasses import asdict

        from Prod.common.experiment import read_experiment

        experiment = run_reporting_errors(lambda: read_experiment(_redis()))
        emit(asdict(experiment) if experiment else {"experiment": None}, as_json)

    @report_app.command("ab")
    def report_ab(
        since: str | None = typer.Option(
            None, "--since", help="ISO-8601 or a duration back (24h, 7d); default: the start."
        ),
        until: str | None = typer.Option(None, "--until", help="Default: the stop, or now."),
        window: str = typer.Option(
            "24h", "--window", help="How long after a response an interaction counts."
        ),
        confidence: float = typer.Option(0.95, "--confidence", help="Of the intervals."),
        experiment_id: str | None = typer.Option(
            None, "--experiment", help="Default: the running or last test."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Compare the arms on what users did after their recommendations: the share of users
        who clicked (click, add_to_cart, purchase) or purchased a recommended item within
        --window, with Wilson intervals, and B - A with Newcombe's interval."""
        report = run_reporting_errors(
            lambda: _report(experiment_id, since, until, window, confidence)
        )
        emit(report, as_json, _render_report)
