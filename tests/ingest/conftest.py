"""Helpers for the ingest tests: a private copy of the fixture dataset with unique ids."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from Prod.datasets.ingest.postgres import psycopg_conninfo

FIXTURE = Path(__file__).parent / "data" / "small"


@pytest.fixture
def prefix() -> str:
    """Unique id prefix, so tests sharing the session's servers never see each other's rows."""
    return f"t{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def dataset(tmp_path: Path, prefix: str) -> Path:
    """The fixture dataset with every ``ING_`` id renamed to ``{prefix}``."""
    folder = tmp_path / "dataset"
    shutil.copytree(FIXTURE, folder)
    for path in folder.iterdir():
        path.write_text(path.read_text().replace("ING_", prefix))
    return folder


def snapshot(database_url: str, prefix: str) -> dict[str, list[tuple]]:
    """All rows this test owns, in a stable order (server-set timestamps included)."""
    like = prefix + "%"
    queries = {
        "user": 'select user_id, name, created_at from "user" where user_id like %s order by 1',
        "item": "select * from item where item_id like %s order by item_id",
        "interaction": "select * from interaction where user_id like %s order by id",
    }
    with psycopg.connect(psycopg_conninfo(database_url)) as conn:
        return {name: conn.execute(sql, (like,)).fetchall() for name, sql in queries.items()}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))
