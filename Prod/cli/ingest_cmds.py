"""Subcommands of ``reco`` for this area (registered by :mod:`Prod.cli.main`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add this area's commands to ``reco``."""
