"""The trainer's domain metrics after real training runs, and the stage hook ``reco train``
draws its progress bars from."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from Prod.als_trainer.main import create_app
from Prod.als_trainer.service import STAGES, run_training
from Prod.cli.trainer_cmds import stage_progress
from tests.utils.metrics import by_label, sample
from tests.utils.publish import insert_dataset


@pytest.fixture(scope="module", autouse=True)
def data(settings):
    return insert_dataset(settings, n_users=30, n_items=20, seed=23)


def test_training_run_publishes_stage_durations_and_ndcg(settings):
    app = create_app(settings, schedule=False)
    with TestClient(app) as client:
        before = sample(client.get("/metrics").text, "reco_trainer_runs_total", status="active")
        response = client.post("/api/v1/train", json={"force": True, "evaluate": True})
        assert response.status_code == 202, response.text
        result = app.state.runner.wait(300)
        assert result is not None and result.status == "active", result and result.error
        page = client.get("/metrics").text

    assert sample(page, "reco_trainer_runs_total", status="active") == before + 1
    assert sample(page, "reco_trainer_last_run_status", status="active") == 1
    assert sample(page, "reco_trainer_last_run_status", status="failed") == 0
    stages = by_label(page, "reco_trainer_last_run_stage_duration_seconds", "stage")
    assert set(stages) == set(STAGES)
    assert stages == {s: pytest.approx(result.durations[s]) for s in STAGES}
    assert sample(page, "reco_trainer_last_run_duration_seconds") == pytest.approx(
        result.durations["total"]
    )
    ndcg = sample(page, "reco_trainer_last_run_ndcg_at_10")
    assert ndcg == pytest.approx(result.metrics["ndcg@10"]) and 0 <= ndcg <= 1
    assert sample(page, "reco_trainer_last_run_timestamp_seconds") > 0


def test_skipped_run_is_counted_and_keeps_the_last_trained_figures(settings):
    run_training(settings, force=True, evaluate=False)
    app = create_app(settings, schedule=False)
    with TestClient(app) as client:
        before = client.get("/metrics").text
        assert run_training(settings).status == "skipped"  # nothing new since
        after = client.get("/metrics").text
    assert sample(after, "reco_trainer_runs_total", status="skipped") == (
        sample(before, "reco_trainer_runs_total", status="skipped") + 1
    )
    assert sample(after, "reco_trainer_last_run_status", status="skipped") == 1
    assert sample(after, "reco_trainer_last_run_stage_duration_seconds", stage="train") == (
        sample(before, "reco_trainer_last_run_stage_duration_seconds", stage="train")
    )
    assert sample(after, "reco_trainer_last_run_ndcg_at_10") is None  # that run did not evaluate


def test_stage_hook_is_called_once_per_stage_in_order(settings):
    seen: list[str] = []
    result = run_training(settings, force=True, evaluate=True, on_stage=seen.append)
    assert result.status == "active", result.error
    assert seen == list(STAGES)
    assert list(result.durations) == [*STAGES, "total"]


def test_reco_train_draws_a_bar_per_stage_on_a_terminal(settings):
    out = io.StringIO()
    terminal = Console(file=out, force_terminal=True, width=100)
    with stage_progress(terminal) as bars:
        assert bars is not None
        result = run_training(settings, force=True, evaluate=False, on_stage=bars)
    assert result.status == "active", result.error
    assert bars.started == [s for s in STAGES if s != "evaluate"]
    drawn = out.getvalue()
    assert all(stage in drawn for stage in bars.started)
    assert all(task.finished for task in bars.progress.tasks)


def test_reco_train_draws_nothing_when_not_a_terminal():
    out = io.StringIO()
    with stage_progress(Console(file=out, force_terminal=False)) as bars:
        assert bars is None
    assert out.getvalue() == ""
