"""``reco export recommendations`` against the real stores: the serving answers, three formats,
clear errors and nothing partial left behind."""

from __future__ import annotations

import csv
import json
import logging

import orjson
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

import config
from Prod.als_reco_engine.service import RecoEngine
from Prod.batch import export
from Prod.cli.main import app as cli
from Prod.common.db import get_engine
from Prod.common.errors import InfraError, InvalidInput
from Prod.common.models import User
from tests.reco_engine.conftest import new_user_id


@pytest.fixture
def cli_settings(settings, monkeypatch):
    monkeypatch.setattr(config, "get_settings", lambda: settings)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    return settings


def _users_file(tmp_path, users, header=True):
    path = tmp_path / "users.txt"
    path.write_text(("user_id\n" if header else "") + "\n".join(users) + "\n\n")
    return path


def _long_rows(bodies):
    return [
        (b["user_id"], rank, item["item_id"], item["score"], b["model_version"])
        for b in bodies
        for rank, item in enumerate(b["items"], start=1)
    ]


def _same_rows(got, expected):
    """Equal rows; scores to 2e-6: the export scores a chunk's users in one matrix product,
    whose float sums may round the 6th decimal differently from one request's mat-vec (the
    service batches concurrent requests the same way)."""
    assert [r[:3] + r[4:] for r in got] == [r[:3] + r[4:] for r in expected]
    assert [r[3] for r in got] == pytest.approx([r[3] for r in expected], abs=2e-6)


def test_export_equals_the_recommend_answers_in_every_format(
    client, settings, dataset, tmp_path, monkeypatch
):
    users = dataset.user_ids[:6] + [new_user_id("exp")]  # trained users and a cold one
    users_file = _users_file(tmp_path, users)
    monkeypatch.setattr(export, "CHUNK_USERS", 3)  # several chunks
    out = {fmt: tmp_path / f"recs.{fmt}" for fmt in export.FORMATS}
    summaries = {
        fmt: export.export_recommendations(
            settings, users=str(users_file), out=path, k=20, fmt=fmt
        ).as_dict()
        for fmt, path in out.items()
    }
    served = [client.get(f"/api/v1/recommend/{user}", params={"k": 20}).json() for user in users]
    assert {b["strategy"] for b in served} >= {"popular"} and len(served[0]["items"]) == 20

    # jsonl: one /recommend body per user, identical
    lines = [orjson.loads(line) for line in out["jsonl"].read_bytes().splitlines()]
    assert [{**b, "items": None} for b in lines] == [{**b, "items": None} for b in served]
    for body, answer in zip(lines, served, strict=True):
        unscored = [{**i, "score": None} for i in body["items"]]
        assert unscored == [{**i, "score": None} for i in answer["items"]]
    _same_rows(_long_rows(lines), _long_rows(served))
    expected = _long_rows(served)
    # csv and parquet: one row per item, the same items, ranks, scores and versions
    with out["csv"].open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == export.ROW_COLUMNS
        got = [
            (r["user_id"], int(r["rank"]), r["item_id"], float(r["score"]), r["model_version"])
            for r in reader
        ]
    _same_rows(got, expected)
    table = pq.read_table(out["parquet"]).to_pylist()
    _same_rows(
        [(r["user_id"], r["rank"], r["item_id"], r["score"], r["model_version"]) for r in table],
        expected,
    )
    for fmt, summary in summaries.items():
        assert summary["users"] == len(users) and summary["rows"] == len(expected), fmt
        assert summary["strategies"]["popular"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_cli_exports_all_users_with_a_json_summary(cli_settings, published, tmp_path):
    out = tmp_path / "all.csv"
    args = ["export", "recommendations", "--users", "all", "--k", "5", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    with get_engine(cli_settings.database_url).connect() as conn:
        n_users = conn.scalar(select(func.count()).select_from(User))
    assert summary["users"] == n_users and summary["format"] == "csv"
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == summary["rows"] and len({r["user_id"] for r in rows}) == n_users
    assert all(1 <= int(r["rank"]) <= 5 for r in rows)


def test_bad_users_file_is_a_clear_error_and_writes_nothing(cli_settings, tmp_path):
    out = tmp_path / "out.csv"
    base = ["export", "recommendations", "--out", str(out)]
    missing = CliRunner().invoke(cli, [*base, "--users", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
    bad = _users_file(tmp_path, ["u-1", "not an id", "u-3"])
    invalid = CliRunner().invoke(cli, [*base, "--users", str(bad)])
    assert invalid.exit_code == 1
    assert f"{bad}:3: 'not an id' is not a valid user id" in invalid.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("user_id\n\n")
    assert "lists no user id" in CliRunner().invoke(cli, [*base, "--users", str(empty)]).stderr
    fmt = CliRunner().invoke(cli, [*base, "--users", "all", "--format", "xlsx"])
    assert fmt.exit_code == 1 and "--format must be one of csv, parquet, jsonl" in fmt.stderr
    k = CliRunner().invoke(cli, [*base, "--users", "all", "--k", "0"])
    assert k.exit_code == 1 and "--k must be between 1 and 100" in k.stderr
    assert list(tmp_path.iterdir()) == [bad, empty]  # no output, no partial file


def test_failure_mid_export_leaves_the_old_file_untouched(settings, dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "CHUNK_USERS", 5)
    out = tmp_path / "campaign.jsonl"
    out.write_text("the previous export\n")
    users_file = _users_file(tmp_path, dataset.user_ids[:10], header=False)
    engine = RecoEngine(settings)
    engine.start()
    serve = engine.recommend

    async def failing(user_id, **kwargs):
        if user_id == dataset.user_ids[7]:  # in the second chunk, after one was written
            raise InfraError("PostgreSQL is unavailable", store="postgres")
        return await serve(user_id, **kwargs)

    engine.recommend = failing
    try:
        with pytest.raises(InfraError):
            export.export_recommendations(
                settings, users=str(users_file), out=out, fmt="jsonl", engine=engine
            )
    finally:
        engine.stop()
    assert out.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.jsonl", "users.txt"]
    with pytest.raises(InvalidInput, match="is a folder"):
        export.export_recommendations(settings, users="all", out=tmp_path, engine=engine)
