"""The one-shot jobs run as modules, configured only through environment variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from config import ROOT
from tests.ingest.conftest import edit, snapshot


def _run(
    module: str, settings, *args: str, collection: str = "products"
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "CHROMA_HOST": settings.chroma_host,
        "CHROMA_PORT": str(settings.chroma_port),
        "PRODUCTS_COLLECTION": collection,
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_postgres_job_loads_and_refuses_bad_input(settings, dataset: Path, prefix: str) -> None:
    ok = _run("Prod.scripts.ingest_postgres_db", settings, "--dataset", str(dataset))
    assert ok.returncode == 0, ok.stderr
    assert "interactions: 6 inserted, 0 updated, 0 unchanged" in ok.stdout
    loaded = snapshot(settings.database_url, prefix)

    edit(dataset / "interactions.csv", f"{prefix}u2,{prefix}i3", f"{prefix}u2,{prefix}i9")
    bad = _run("Prod.scripts.ingest_postgres_db", settings, "--dataset", str(dataset))
    assert bad.returncode == 1
    assert len(_errors(bad.stderr)) == 1
    assert f"interactions.csv:6: unknown item_id '{prefix}i9'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert snapshot(settings.database_url, prefix) == loaded

    skipped = _run(
        "Prod.scripts.ingest_postgres_db", settings, "--dataset", str(dataset), "--skip-bad-rows"
    )
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped 1 bad row(s):" in skipped.stdout


def test_postgres_job_names_a_missing_file(settings, dataset: Path) -> None:
    (dataset / "items.csv").unlink()
    result = _run("Prod.scripts.ingest_postgres_db", settings, "--dataset", str(dataset))
    assert result.returncode == 1
    assert _errors(result.stderr) == [f"error: dataset folder {dataset} is missing items.csv"]


def test_chroma_job_embeds_then_skips_unchanged(settings, dataset: Path, prefix: str) -> None:
    from Prod.common.stores import chroma_for

    collection = f"jobs-{prefix.rstrip('_')}"
    try:
        first = _run(
            "Prod.scripts.ingest_chroma_db",
            settings,
            "--dataset",
            str(dataset),
            collection=collection,
        )
        assert first.returncode == 0, first.stderr
        assert f"{collection}: 3 added, 0 updated, 0 unchanged, 0 deleted" in first.stdout
        again = _run(
            "Prod.scripts.ingest_chroma_db",
            settings,
            "--dataset",
            str(dataset),
            collection=collection,
        )
        assert f"{collection}: 0 added, 0 updated, 3 unchanged, 0 deleted" in again.stdout
        (dataset / "ProductsRAG.json").write_text("[{]")
        bad = _run(
            "Prod.scripts.ingest_chroma_db",
            settings,
            "--dataset",
            str(dataset),
            collection=collection,
        )
        assert bad.returncode == 1
        assert _errors(bad.stderr) == [
            "error: ProductsRAG.json:1: invalid JSON (Expecting property name enclosed in "
            "double quotes, column 3)"
        ]
    finally:
        chroma_for(settings).delete_collection(collection)


def test_postgres_job_keeps_an_absent_column_unless_told_to_clear_it(
    settings, dataset: Path, prefix: str
) -> None:
    first = _run("Prod.scripts.ingest_postgres_db", settings, "--dataset", str(dataset))
    assert first.returncode == 0, first.stderr
    (dataset / "items.csv").write_text(
        f"item_id,title\n{prefix}i1,Trail Boots\n{prefix}i2,Espresso Maker\n"
        f"{prefix}i3,Puzzle Cube\n"
    )
    kept = _run("Prod.scripts.ingest_postgres_db", settings, "--dataset", str(dataset))
    assert kept.returncode == 0, kept.stderr
    assert "items.csv has no brand, category, price" in kept.stdout
    prices = {row[0]: row[4] for row in snapshot(settings.database_url, prefix)["item"]}
    assert prices[f"{prefix}i2"] == 149.0

    cleared = _run(
        "Prod.scripts.ingest_postgres_db",
        settings,
        "--dataset",
        str(dataset),
        "--clear-column",
        "price",
        "--clear-column",
        "brand",
    )
    assert cleared.returncode == 0, cleared.stderr
    assert "cleared (set to NULL): brand, price" in cleared.stdout
    rows = {row[0]: row for row in snapshot(settings.database_url, prefix)["item"]}
    assert rows[f"{prefix}i2"][2] is None and rows[f"{prefix}i2"][4] is None  # brand, price
    assert rows[f"{prefix}i2"][3] == "Home & Kitchen"  # category kept

    edit(dataset / "users.csv", "user_id,name", "user_id,user_id")
    duplicate = _run("Prod.scripts.ingest_postgres_db", settings, "--dataset", str(dataset))
    assert duplicate.returncode == 1 and "Traceback" not in duplicate.stderr
    assert _errors(duplicate.stderr) == [
        "error: users.csv:1: column 'user_id' appears more than once in the header; "
        "nothing was written"
    ]


def test_chroma_job_refuses_to_empty_the_catalogue(settings, dataset: Path, prefix: str) -> None:
    from Prod.common.stores import chroma_for

    collection = f"jobs-{prefix.rstrip('_')}"
    try:
        first = _run(
            "Prod.scripts.ingest_chroma_db",
            settings,
            "--dataset",
            str(dataset),
            collection=collection,
        )
        assert first.returncode == 0, first.stderr
        (dataset / "ProductsRAG.json").write_text("[]")
        refused = _run(
            "Prod.scripts.ingest_chroma_db",
            settings,
            "--dataset",
            str(dataset),
            collection=collection,
        )
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        [error] = _errors(refused.stderr)
        assert error.startswith("error: refusing to delete 3 of the 3 stored products")
        assert f"First ids: {prefix}i1, {prefix}i2, {prefix}i3." in error
        assert chroma_for(settings).get_collection(collection).count() == 3

        allowed = _run(
            "Prod.scripts.ingest_chroma_db",
            settings,
            "--dataset",
            str(dataset),
            "--allow-mass-delete",
            collection=collection,
        )
        assert allowed.returncode == 0, allowed.stderr
        assert f"{collection}: 0 added, 0 updated, 0 unchanged, 3 deleted" in allowed.stdout
        assert f"deleted: {prefix}i1, {prefix}i2, {prefix}i3" in allowed.stdout
    finally:
        chroma_for(settings).delete_collection(collection)
