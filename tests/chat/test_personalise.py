"""The hybrid step: a user's ALS taste (published factor or folded in) reorders chat results."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from sqlalchemy import insert

from Prod.als_trainer.publisher import switch_active
from Prod.chat_reco_engine.personalise import blend, min_max
from Prod.common.db import session_scope
from Prod.common.models import Interaction, User
from Prod.common.stores import redis_for
from tests.utils.publish import publish_factors

TASTE_BRAND = "Bose"


def test_blend_is_relevance_only_without_affinity():
    relevance = np.array([3.0, 1.0, 2.0])
    assert np.allclose(blend(relevance, None, 0.3), [1.0, 0.0, 0.5])
    mixed = blend(relevance, np.array([0.0, 10.0, 5.0]), 0.5)
    assert np.allclose(mixed, 0.5 * min_max(relevance) + 0.5 * np.array([0.0, 1.0, 0.5]))


@pytest.fixture(scope="module")
def published_taste(settings, catalogue) -> dict:
    """A published model (through the trainer's publisher) in which one user loves Bose."""
    prefix = catalogue["prefix"]
    item_ids = list(catalogue["items"])
    is_taste = [catalogue["items"][i]["brand"] == TASTE_BRAND for i in item_ids]
    item_factors = np.array(
        [[1.0, 0.0, 0.0] if t else [0.0, 1.0, 0.0] for t in is_taste], dtype=np.float32
    )
    fan, folded = f"{prefix}-fan", f"{prefix}-folded"
    version = publish_factors(settings, {fan: [1.0, 0.0, 0.0]}, item_ids, item_factors).version
    switch_active(redis_for(settings), version)
    # a user the model has not seen, whose Postgres history is all Bose: folded in at request time
    bose = [i for i, t in zip(item_ids, is_taste, strict=True) if t][:4]
    now = datetime.now(timezone.utc)
    with session_scope(settings.database_url) as db:
        db.execute(insert(User), [{"user_id": folded}])
        db.execute(
            insert(Interaction),
            [
                {
                    "user_id": folded,
                    "item_id": item,
                    "event": "purchase",
                    "weight": 8.0,
                    "occurred_at": now,
                }
                for item in bose
            ],
        )
    return {"fan": fan, "folded": folded, "version": version}


@pytest.mark.parametrize(("who", "source"), [("fan", "factor"), ("folded", "fold_in")])
def test_personalisation_changes_order_for_user_with_taste(
    make_client, published_taste, who, source
):
    client = make_client(personalisation_weight=0.7)
    body = {"message": "wireless headphones with long battery life", "k": 8}
    anonymous = client.post("/api/v1/chat", json=body).json()
    personal = client.post("/api/v1/chat", json={**body, "user_id": published_taste[who]}).json()
    assert anonymous["personalisation"] == "none"
    assert personal["personalisation"] == source
    anon_ids = [p["item_id"] for p in anonymous["products"]]
    personal_ids = [p["item_id"] for p in personal["products"]]
    assert anon_ids != personal_ids
    brands = [p["brand"] for p in personal["products"]]
    assert brands[0] == TASTE_BRAND
    share = brands[:4].count(TASTE_BRAND)
    assert share > [p["brand"] for p in anonymous["products"]][:4].count(TASTE_BRAND)
    assert all(p["affinity"] is not None for p in personal["products"])


def test_unknown_user_gets_relevance_only(client, published_taste):
    payload = client.post(
        "/api/v1/chat", json={"message": "headphones", "user_id": "nobody-known"}
    ).json()
    assert payload["personalisation"] == "none"
    assert all(p["affinity"] is None for p in payload["products"])


@pytest.fixture(scope="module")
def low_rater(settings, catalogue, published_taste) -> dict:
    """A user the model has not seen whose only history is three Bose products rated 1/5 and a
    fourth disliked."""
    prefix = catalogue["prefix"]
    bose = [i for i, item in catalogue["items"].items() if item["brand"] == TASTE_BRAND][:4]
    user = f"{prefix}-lowrater"
    now = datetime.now(timezone.utc)
    with session_scope(settings.database_url) as db:
        db.execute(insert(User), [{"user_id": user}])
        db.execute(
            insert(Interaction),
            [
                {
                    "user_id": user,
                    "item_id": item,
                    "event": "rating",
                    "rating": 1.0,
                    "weight": 1.0,
                    "occurred_at": now,
                }
                for item in bose[:3]
            ]
            + [
                {
                    "user_id": user,
                    "item_id": bose[3],
                    "event": "dislike",
                    "weight": 1.0,
                    "occurred_at": now,
                }
            ],
        )
    return {"user": user, "disliked": bose}


def test_low_ratings_are_not_positive_feedback_in_chat(make_client, low_rater):
    """Regression (issue 12): 1/5 ratings of Bose products folded in as a Bose taste and put
    Bose first. Now they give no taste, the rated products never come back, and Bose products
    are pushed down (the user's anti-taste)."""
    client = make_client(personalisation_weight=0.7)
    body = {"message": "wireless headphones with long battery life", "k": 12}
    anonymous = client.post("/api/v1/chat", json=body).json()
    personal = client.post("/api/v1/chat", json={**body, "user_id": low_rater["user"]}).json()
    assert personal["personalisation"] == "none"  # nothing positive to fold in
    ids = [p["item_id"] for p in personal["products"]]
    assert ids and not set(ids) & set(low_rater["disliked"])
    assert all(0.0 <= p["score"] <= 1.0 for p in personal["products"])

    def bose_positions(payload) -> list[int]:
        products = [p for p in payload["products"] if p["item_id"] not in low_rater["disliked"]]
        return [n for n, p in enumerate(products) if p["brand"] == TASTE_BRAND]

    pushed, before = bose_positions(personal), bose_positions(anonymous)
    assert before and personal["products"][0]["brand"] != TASTE_BRAND
    assert len(pushed) <= len(before) and np.mean(pushed or [99]) > np.mean(before)


def test_search_leaves_out_disliked_products(client, low_rater):
    """/search ranks through the same step: even asking for Bose, the disliked ones stay out."""
    params = {"q": "Bose wireless headphones", "user_id": low_rater["user"], "k": 20}
    response = client.get("/api/v1/search", params=params)
    assert response.status_code == 200, response.text
    products = response.json()["products"]
    assert products and not {p["item_id"] for p in products} & set(low_rater["disliked"])
