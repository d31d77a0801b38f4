"""Domain metrics of the serving engine on /metrics, after real requests."""

from __future__ import annotations

from tests.reco_engine.conftest import new_user_id
from tests.utils.metrics import sample


def _served(client, strategy: str) -> float:
    return sample(client.get("/metrics").text, "reco_recommendations_total", strategy=strategy)


def test_recommendations_are_counted_by_strategy_on_metrics(client, dataset, active):
    before = {s: _served(client, s) for s in ("als", "fold_in", "popular")}
    assert all(v is not None for v in before.values())  # every strategy's series exists
    trained = dataset.user_ids[11]
    assert client.get(f"/api/v1/recommend/{trained}", params={"k": 3}).json()["strategy"] == "als"
    # the documented route (a query the fast path leaves alone) is counted in the same place
    standard = client.get(f"/api/v1/recommend/{trained}", params={"k": 3, "exclude_seen": "on"})
    assert standard.json()["strategy"] == "als"
    stranger = new_user_id("metrics")
    assert client.get(f"/api/v1/recommend/{stranger}").json()["strategy"] == "popular"
    event = {"user_id": stranger, "item_id": dataset.item_ids[3], "event": "purchase"}
    assert client.post("/api/v1/interactions", json=event).status_code == 201
    assert client.get(f"/api/v1/recommend/{stranger}").json()["strategy"] == "fold_in"

    after = {s: _served(client, s) for s in ("als", "fold_in", "popular")}
    assert after == {
        "als": before["als"] + 2,
        "fold_in": before["fold_in"] + 1,
        "popular": before["popular"] + 1,
    }


def test_fold_in_solves_are_timed(client, dataset):
    page = client.get("/metrics").text
    before = sample(page, "reco_fold_in_duration_seconds_count") or 0.0
    user = new_user_id("timed")
    event = {"user_id": user, "item_id": dataset.item_ids[4], "event": "click"}
    assert client.post("/api/v1/interactions", json=event).status_code == 201
    for _ in range(2):  # the second answer comes from the fold-in cache: not a solve
        assert client.get(f"/api/v1/recommend/{user}").json()["strategy"] == "fold_in"
    page = client.get("/metrics").text
    assert sample(page, "reco_fold_in_duration_seconds_count") == before + 1
    assert sample(page, "reco_fold_in_duration_seconds_sum") > 0


def test_metrics_show_the_served_model_its_age_and_items(client, active):
    page = client.get("/metrics").text
    status = client.get("/api/v1/status").json()
    served = status["model_version"]
    assert sample(page, "reco_model_info", version=served) == 1
    assert sample(page, "reco_model_items") == status["item_count"] > 0
    assert 0 <= sample(page, "reco_model_age_seconds") < 24 * 3600
    assert sample(page, "reco_popularity_items") > 0
    assert sample(page, "reco_history_rows_buffered") is not None  # the writer's, beside them
    assert sample(page, "http_requests_total") is not None
