"""`reco bench embed`: every backend embeds the same product texts; rates and fidelity reported."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from Prod.cli import bench_cmds


def _bench_app() -> typer.Typer:
    bench = typer.Typer()
    bench_cmds.register(typer.Typer(), bench, typer.Typer())
    return bench


def _catalogue(folder: Path, n: int) -> Path:
    records = [
        {
            "item_id": f"p{i}",
            "text": f"Product {i} kettle. Brand: Brewista. Category: Home. "
            f"Price: ${10 + i}.99. A {'quiet ' * (i % 4)}electric kettle with a {i}-cup jug.",
            "metadata": {"title": f"Product {i} kettle", "brand": "Brewista"},
        }
        for i in range(n)
    ]
    (folder / "ProductsRAG.json").write_text(json.dumps(records))
    return folder


def test_backends_are_compared_on_the_same_texts(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _bench_app(),
        [
            "embed",
            "--dataset",
            str(_catalogue(tmp_path, 12)),
            "--backend",
            "onnx",
            "--backend",
            "onnx-int8",
            "--repeats",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["products"] == 12 and report["repeats"] == 2
    # the price sentence is not embedded, so texts are short
    assert 10 < report["mean_tokens"] < 30
    rows = {row["backend"]: row for row in report["backends"] if row["device"] == "cpu"}
    assert set(rows) == {"onnx", "onnx-int8"}
    assert rows["onnx"]["cosine_to_fp32_min"] > 0.999  # fp32 ONNX is torch's network
    assert 0.98 < rows["onnx-int8"]["cosine_to_fp32_min"] < 0.9999  # int8 is close, not equal
    assert rows["onnx-int8"]["embedder"].startswith("all-MiniLM-L6-v2|onnx-int8")
    for row in rows.values():
        # both are rounded: seconds to 1 ms, which is up to 0.0005 s x products_per_s off
        assert abs(row["products_per_s"] * row["seconds"] - 12) < 0.1 + row["products_per_s"] * 5e-4
        assert row["products_per_cpu_s"] > 0 and row["threads"] >= 1


def test_a_generated_catalogue_gets_a_readable_table() -> None:
    result = CliRunner().invoke(
        _bench_app(), ["embed", "--products", "8", "--backend", "onnx-int8", "--repeats", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "embedding 8 products" in result.output and "onnx-int8" in result.output


def test_an_unknown_backend_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _bench_app(), ["embed", "--dataset", str(_catalogue(tmp_path, 2)), "--backend", "tensorrt"]
    )
    assert result.exit_code == 1
    assert "tensorrt" in result.output and "onnx-int8" in result.output
