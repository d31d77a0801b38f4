"""``reco train`` uses the service's code path and reports one JSON object with --json."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import config
from Prod.cli.main import app
from Prod.common import model_store
from Prod.common.stores import redis_for
from tests.utils.publish import insert_dataset


def test_reco_train_json_publishes_and_reports(settings, monkeypatch):
    insert_dataset(settings, n_users=20, n_items=15, seed=5)
    # point the command's get_settings() at the test servers
    monkeypatch.setattr(config, "get_settings", lambda: settings)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--force", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "active"
    assert report["version_id"] == model_store.active_version(redis_for(settings))
    assert report["counts"]["n_users"] >= 20 and "ndcg@10" in report["metrics"]
    assert {"load", "train", "publish_users", "switch", "total"} <= set(report["durations"])

    again = runner.invoke(app, ["train", "--json"])  # no new data since: skipped, exit 0
    assert again.exit_code == 0
    assert json.loads(again.stdout.strip().splitlines()[-1])["status"] == "skipped"


def test_reco_train_status_shows_nested_values_as_text(settings, monkeypatch):
    insert_dataset(settings, n_users=20, n_items=15, seed=6)
    monkeypatch.setattr(config, "get_settings", lambda: settings)
    runner = CliRunner()
    assert runner.invoke(app, ["train", "--force", "--json"]).exit_code == 0
    shown = runner.invoke(app, ["train-status"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "ndcg@10: " in shown.stdout  # metrics as "name: value" lines
    assert '{"' not in shown.stdout and '"ndcg@10"' not in shown.stdout
