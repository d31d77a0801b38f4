"""Stored lists answer alike on POST, PUT, GET and DELETE (issue 15.3): scores rounded as
/recommend serves them (6 decimals), and the strategy the list was stored with."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from Prod.common.db import session_scope
from Prod.common.models import RecommendationListItem
from tests.reco_engine.conftest import new_user_id


def _scores(body: dict) -> list[float | None]:
    return [i["score"] for i in body["items"]]


def _stored_scores(settings, user_id: str) -> list[float]:
    with session_scope(settings.database_url) as session:
        return list(
            session.scalars(
                select(RecommendationListItem.score)
                .where(RecommendationListItem.user_id == user_id)
                .order_by(RecommendationListItem.position)
            )
        )


def test_put_and_get_round_list_scores_as_post_does(client, dataset, settings):
    """The bug: PUT and GET answered the raw dot product (0.41236791014671326), POST 6 decimals."""
    user = dataset.user_ids[33]
    posted = client.post(f"/api/v1/lists/{user}", params={"k": 5}).json()
    assert posted["items"] and all(round(s, 6) == s for s in _scores(posted))

    put = client.put(f"/api/v1/lists/{user}", json={"item_ids": dataset.item_ids[3:9]})
    assert put.status_code == 200
    raw = _stored_scores(settings, user)
    assert any(round(s, 6) != s for s in raw)  # the model's scores carry more decimals
    assert _scores(put.json()) == [round(s, 6) for s in raw]
    got = client.get(f"/api/v1/lists/{user}").json()
    assert got["items"] == put.json()["items"]

    removed = client.delete(f"/api/v1/lists/{user}/items", params={"item_id": dataset.item_ids[3]})
    assert _scores(removed.json()) == [round(s, 6) for s in _stored_scores(settings, user)]


def test_get_list_shows_the_strategy_it_was_stored_with(client, dataset):
    """The bug: GET /lists/{user_id} answered ``strategy: null`` whatever scored the list."""
    user = dataset.user_ids[34]
    posted = client.post(f"/api/v1/lists/{user}", params={"k": 4}).json()
    assert posted["strategy"] == "als"
    assert client.get(f"/api/v1/lists/{user}").json()["strategy"] == "als"

    event = {"user_id": user, "item_id": dataset.item_ids[0], "event": "click"}
    assert client.post("/api/v1/interactions", json=event).status_code == 201
    refreshed = client.post(f"/api/v1/lists/{user}", params={"k": 4}).json()
    assert refreshed["strategy"] == "fold_in"
    got = client.get(f"/api/v1/lists/{user}").json()
    assert got == refreshed
    doomed = refreshed["items"][0]["item_id"]
    removed = client.delete(f"/api/v1/lists/{user}/items", params={"item_id": doomed}).json()
    assert removed["strategy"] == "fold_in"
    kept = [(i["item_id"], i["score"]) for i in got["items"][1:]]
    assert [(i["item_id"], i["score"]) for i in removed["items"]] == kept

    newcomer = new_user_id("lists-popular")  # no interactions: popularity scores the list
    put = client.put(f"/api/v1/lists/{newcomer}", json={"item_ids": dataset.item_ids[:3]}).json()
    assert put["strategy"] == "popular"
    assert client.get(f"/api/v1/lists/{newcomer}").json()["strategy"] == "popular"


def test_list_stored_before_strategies_were_recorded_reads_null_and_rounded(
    client, dataset, settings
):
    user = new_user_id("lists-legacy")
    with session_scope(settings.database_url) as session:
        session.add(
            RecommendationListItem(
                user_id=user,
                item_id=dataset.item_ids[1],
                score=0.123456789,
                position=1,
                model_version=None,
                strategy=None,
                updated_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
            )
        )
    body = client.get(f"/api/v1/lists/{user}").json()
    assert body["strategy"] is None
    assert [(i["item_id"], i["score"]) for i in body["items"]] == [(dataset.item_ids[1], 0.123457)]
