"""`reco generate` and `reco import`: readable output, and one JSON object as the last line."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from Prod.cli import data_cmds

FIXTURES = Path(__file__).parent / "fixtures"


def _app() -> typer.Typer:
    app = typer.Typer()
    data_cmds.register(app, typer.Typer(), typer.Typer())
    return app


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_generate_json_reports_counts_and_writes_files(tmp_path):
    result = CliRunner().invoke(
        _app(),
        [
            "generate",
            "--out",
            str(tmp_path),
            "--users",
            "40",
            "--items",
            "25",
            "--interactions",
            "900",
            "--seed",
            "5",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = _last_json(result.stdout)
    assert (summary["users"], summary["items"], summary["interactions"]) == (40, 25, 900)
    assert summary["seed"] == 5
    assert len((tmp_path / "interactions.csv").read_text().splitlines()) == 901


def test_generate_readable_summary(tmp_path):
    result = CliRunner().invoke(_app(), ["generate", "--out", str(tmp_path), "--scale", "0.01"])
    assert result.exit_code == 0, result.output
    assert "interactions" in result.stdout and "1,000" in result.stdout


def test_import_movielens_and_amazon(tmp_path):
    runner = CliRunner()
    movielens = runner.invoke(
        _app(),
        ["import", "movielens", str(FIXTURES / "ml-100k"), "--out", str(tmp_path / "ml"), "--json"],
    )
    assert movielens.exit_code == 0, movielens.output
    assert _last_json(movielens.stdout)["format"] == "movielens-100k"
    amazon = runner.invoke(
        _app(),
        [
            "import",
            "amazon",
            str(FIXTURES / "amazon2023"),
            "--out",
            str(tmp_path / "amz"),
            "--reviewed-only",
            "--json",
        ],
    )
    assert amazon.exit_code == 0, amazon.output
    summary = _last_json(amazon.stdout)
    assert (summary["format"], summary["items"], summary["interactions"]) == ("amazon-2023", 3, 4)
    assert (tmp_path / "amz" / "ProductsRAG.json").exists()


def test_import_error_is_one_clear_line_and_nonzero_exit(tmp_path):
    result = CliRunner().invoke(
        _app(), ["import", "movielens", str(tmp_path), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert "no MovieLens ratings found" in " ".join(result.output.split())  # rich wraps lines


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_generate_refuses_to_overwrite_the_shipped_dataset():
    from config import get_settings

    shipped = Path(get_settings().dataset_dir)
    before = _files(shipped)
    runner = CliRunner()
    result = runner.invoke(_app(), ["generate", "--out", str(shipped), "--scale", "0.01"])
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "is the configured default dataset" in message and "--force" in message
    assert _files(shipped) == before
    missing_out = runner.invoke(_app(), ["generate", "--scale", "0.01"])
    assert missing_out.exit_code == 2 and "--out" in missing_out.output  # never a silent default
    assert _files(shipped) == before


def test_generate_into_a_non_empty_folder_needs_force(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    runner = CliRunner()
    refused = runner.invoke(_app(), ["generate", "--out", str(tmp_path), "--scale", "0.01"])
    assert refused.exit_code == 1 and "non-empty folder" in " ".join(refused.stderr.split())
    assert not (tmp_path / "interactions.csv").exists()
    forced = runner.invoke(
        _app(), ["generate", "--out", str(tmp_path), "--scale", "0.01", "--force"]
    )
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "interactions.csv").exists()


def test_import_movielens_help_names_the_layouts_it_reads(tmp_path):
    runner = CliRunner()
    shown = " ".join(
        runner.invoke(
            _app(), ["import", "movielens", "--help"], env={"COLUMNS": "200"}
        ).output.split()
    )
    for layout in ("ml-100k", "ml-1m", "ml-latest"):
        assert layout in shown
    ml1m = tmp_path / "ml-1m"
    ml1m.mkdir()
    (ml1m / "ratings.dat").write_text("1::10::5::978300760\n2::10::3::978300761\n")
    (ml1m / "movies.dat").write_text("10::Toy Story (1995)::Animation|Comedy\n")
    result = runner.invoke(
        _app(), ["import", "movielens", str(ml1m), "--out", str(tmp_path / "out"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert _last_json(result.stdout)["format"] == "movielens-1m"
