"""The ``reco`` command line as a whole: help texts, ``--version``, and what commands that need
servers do when none answer (start temporary ones, or name the one to start)."""

from __future__ import annotations

import json
import logging
from importlib.metadata import version

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import config
from config import Settings
from Prod.cli.main import app
from Prod.cli.output import dict_table, readable
from Prod.orchestrate.local_infra import LocalInfra, free_port


def _commands(command, path=()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def test_every_option_has_help_and_flags_read_as_flags():
    runner = CliRunner()
    commands = list(_commands(get_command(app)))
    assert len(commands) > 15
    for path, command in commands:
        for param in command.params:
            assert getattr(param, "help", None), f"reco {' '.join(path)} {param.name}: no help"
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, shown.output
        assert "<bool>" not in shown.output, f"reco {' '.join(path)} --help:\n{shown.output}"
    train = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--eval" in train and "--no-eval" in train and "--json" in train


def test_version_flag():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"reco {version('reco-platform')}"


def test_tables_render_nested_values_as_text_not_json():
    report = {"metrics": {"ndcg@10": 0.12, "recall@10": 0.3}, "error": None, "ids": ["a", "b"]}
    assert readable(report["metrics"]) == "ndcg@10: 0.12\nrecall@10: 0.3"
    assert readable({"active": {"metrics": {"ndcg@10": 0.1}}}) == (
        "active:\n  metrics:\n    ndcg@10: 0.1"
    )
    cells = [cell for column in dict_table(report).columns for cell in column._cells]
    assert cells[3:] == ["ndcg@10: 0.12\nrecall@10: 0.3", "-", "a, b"]
    assert not any("{" in str(cell) for cell in cells)


@pytest.fixture
def no_servers(tmp_path, monkeypatch) -> Settings:
    """Settings whose PostgreSQL, Redis and Chroma ports have nothing listening."""
    nothing = LocalInfra(tmp_path / "nothing", free_port(), free_port(), free_port())
    settings = Settings(
        environment="test",
        **nothing.settings_overrides(),
        als_params_path=tmp_path / "als_params.json",
        reranker_model="",
        api_key=None,
    )
    monkeypatch.setattr(config, "get_settings", lambda: settings)
    # `reco train` points the root logger at the CliRunner's stream, closed after the call
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    return settings


@pytest.mark.parametrize(
    ("args", "server"),
    [
        (["train-status"], "Redis"),
        (["train", "--force"], "Redis"),
        (["rollback"], "Redis"),
        (["ingest", "postgres"], "PostgreSQL"),
        (["ingest", "chroma"], "Chroma"),
    ],
)
def test_command_needing_servers_says_what_to_start(no_servers, args, server):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {server} is not reachable: start the platform with `bash start_services.sh` "
        "(only the stores: `reco infra up`)"
    ]


@pytest.mark.slow
def test_eval_chat_without_servers_starts_temporary_ones(no_servers, tmp_path):
    runner = CliRunner()
    dataset = tmp_path / "dataset"
    generated = runner.invoke(app, ["generate", "--out", str(dataset), "--scale", "0.05"])
    assert generated.exit_code == 0, generated.output
    result = runner.invoke(
        app,
        [
            "eval",
            "chat",
            str(dataset),
            "--queries",
            "5",
            "--dialogues",
            "1",
            "--max-products",
            "100",
            "--threads",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    # the notice goes to stderr: stdout is the JSON report alone
    assert "configured servers not running: starting temporary ones" in result.stderr
    report = json.loads(result.stdout)
    assert report["servers"] == "temporary"
    assert report["products"] == 100
    assert {query_set["queries"] for query_set in report["query_sets"].values()} == {5}
    assert not LocalInfra.from_settings(no_servers).status()["chroma"]["healthy"]
