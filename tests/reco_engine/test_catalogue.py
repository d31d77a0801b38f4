"""The catalogue over the API (issue 18.1): items upserted by the ingest's rules, all or nothing,
searchable by the chat at once; deleted items gone from every answer at once, on every replica.

Real Postgres, Redis, Chroma and MiniLM. The module inserts its own small dataset and publishes a
model on it, and writes products to a collection of its own, so deleting leaves the shared
fixtures alone.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from Prod.als_reco_engine.deleted_items import DELETED_KEY, PRUNE_AFTER_S
from Prod.als_reco_engine.main import create_app
from Prod.chat_reco_engine.retrieval import retrieve_many
from Prod.common.db import session_scope
from Prod.common.embeddings import embed_texts
from Prod.common.items import product_text
from Prod.common.models import Interaction, Item, RecommendationListItem, User
from Prod.common.stores import chroma_for, redis_for
from Prod.datasets.ingest.chroma import HASH_KEY
from Prod.orchestrate.local_infra import free_port
from tests.reco_engine.conftest import new_user_id, wait_for
from tests.utils.publish import insert_dataset, train_and_publish


@pytest.fixture(scope="module")
def own(settings):
    """Settings with a products collection of this module's own."""
    return settings.model_copy(update={"products_collection": f"products-{uuid.uuid4().hex[:8]}"})


@pytest.fixture(scope="module")
def data(settings, published):
    """This module's users and items, in a model published after the shared one."""
    dataset = insert_dataset(settings, n_users=30, n_items=24, events_per_user=8, seed=18)
    train_and_publish(settings)
    return dataset


@pytest.fixture(scope="module")
def api(own, data):
    with TestClient(create_app(own, poll_interval_s=0.2, popularity_interval_s=0.5)) as client:
        yield client


def _item_ids(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def _stored_items(settings, item_ids: list[str]) -> list[str]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(Item.item_id).where(Item.item_id.in_(item_ids))))


def _in_collection(own, item_ids: list[str]) -> list[str]:
    names = {getattr(c, "name", c) for c in chroma_for(own).list_collections()}
    if own.products_collection not in names:
        return []
    return chroma_for(own).get_collection(own.products_collection).get(ids=item_ids)["ids"]


def _new_item(title: str, **fields) -> dict:
    return {"item_id": f"n-{uuid.uuid4().hex[:10]}", "title": title, **fields}


def test_batch_with_one_bad_record_is_a_422_naming_it_and_writes_nothing(api, settings, own):
    good = [_new_item("Alpine trekking poles", price=39.5), _new_item("Camp stove", price=20)]
    bad = _new_item("Tent", price=-4, avg_rating=6)
    response = api.post("/api/v1/items", json={"items": [good[0], bad, good[1]]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    # the ingest's rules and words, at the record's place in the batch
    assert {"field": "items[1].price", "message": "price -4 must be >= 0"} in error["fields"]
    assert {
        "field": "items[1].avg_rating",
        "message": "avg_rating 6 must be >= 0 and <= 5",
    } in error["fields"]
    assert "nothing was written" in error["message"]
    ids = [good[0]["item_id"], bad["item_id"], good[1]["item_id"]]
    assert _stored_items(settings, ids) == []
    assert _in_collection(own, ids) == []

    duplicate = api.post("/api/v1/items", json={"items": [good[0], good[0]]})
    assert duplicate.status_code == 422
    assert duplicate.json()["error"]["fields"] == [
        {
            "field": "items[1].item_id",
            "message": f"duplicate item_id '{good[0]['item_id']}' (first at items[0])",
        }
    ]
    not_a_number = api.post("/api/v1/items", json={"items": [{**good[1], "price": "cheap"}]})
    assert not_a_number.status_code == 422
    assert not_a_number.json()["error"]["fields"][0]["field"] == "items[0].price"
    blank_title = api.post("/api/v1/items", json={**good[1], "title": "  "})
    assert blank_title.json()["error"]["fields"] == [
        {"field": "title", "message": "title is empty"}
    ]
    assert _stored_items(settings, ids) == []


def test_upserted_item_is_found_by_the_chats_query_at_once(api, settings, own, embedder):
    kettle = _new_item(
        "Glacier Peak Titanium Camping Kettle",
        brand="Glacier Peak",
        category="Outdoor Cooking",
        price=54.0,
        avg_rating=4.6,
        rating_count=8,
        description="An ultralight titanium kettle that boils water fast on any camp stove.",
    )
    lamp = _new_item("Lumen Desk Lamp", category="Home Office", price=25.0)
    created = api.post("/api/v1/items", json={"items": [kettle, lamp]})
    assert created.status_code == 200, created.text
    assert created.json() == {
        "created": [kettle["item_id"], lamp["item_id"]],
        "updated": [],
        "embedded": 2,
        "collection": own.products_collection,
    }
    assert sorted(_stored_items(settings, [kettle["item_id"], lamp["item_id"]])) == sorted(
        [kettle["item_id"], lamp["item_id"]]
    )

    # the chat's retrieval: the query's MiniLM vector against the products collection
    collection = chroma_for(own).get_collection(own.products_collection)
    query = embed_texts(embedder, ["a lightweight kettle to boil water when camping"])
    found = retrieve_many(collection, query, None, n_results=2)[0]
    assert found[0].item_id == kettle["item_id"]
    stored = collection.get(ids=[kettle["item_id"]], include=["documents", "metadatas"])
    assert stored["documents"] == [product_text(kettle)]  # the ingest's document
    assert stored["metadatas"][0]["price"] == 54.0 and stored["metadatas"][0][HASH_KEY]
    filtered = retrieve_many(collection, query, {"price": {"$lte": 30.0}}, n_results=2)[0]
    assert [c.item_id for c in filtered] == [lamp["item_id"]]

    cheaper = api.post("/api/v1/items", json={**kettle, "price": 44.0})
    assert cheaper.json()["updated"] == [kettle["item_id"]]
    metadata = collection.get(ids=[kettle["item_id"]], include=["metadatas"])["metadatas"][0]
    assert metadata["price"] == 44.0


def test_deleted_item_is_gone_from_every_answer_at_once_on_every_replica(api, own, settings, data):
    user = data.user_ids[3]
    before = api.get(f"/api/v1/recommend/{user}", params={"k": 30, "exclude_seen": False})
    assert before.json()["strategy"] == "als"
    gone = next(i for i in _item_ids(before.json()) if i in data.item_ids)
    neighbour = _item_ids(api.get(f"/api/v1/similar/{gone}", params={"k": 1}).json())[0]
    assert gone in _item_ids(api.get(f"/api/v1/similar/{neighbour}", params={"k": 100}).json())
    # the product in the chat's collection, a stored list holding it, a new user's popular list
    with session_scope(settings.database_url) as session:
        row = session.get(Item, gone)
        record = {c: getattr(row, c) for c in ("item_id", "title", "brand", "category", "price")}
        n_events = session.scalar(select(func.count()).where(Interaction.item_id == gone))
    assert n_events > 0
    assert api.post("/api/v1/items", json=record).json()["updated"] == [gone]
    kept = [i for i in _item_ids(before.json()) if i != gone][:2]
    listed = api.put(f"/api/v1/lists/{user}", json={"item_ids": [gone, *kept]})
    assert gone in _item_ids(listed.json())

    with TestClient(create_app(own, poll_interval_s=0.2)) as replica:
        assert gone in _item_ids(
            replica.get(f"/api/v1/recommend/{user}", params={"k": 30, "exclude_seen": False}).json()
        )
        deleted = api.delete(f"/api/v1/items/{gone}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {
            "deleted": [gone],
            "items": 1,
            "interactions": n_events,
            "list_entries": 1,
            "suppressions": 0,
            "products": 1,
        }
        # this replica: at once
        again = api.get(f"/api/v1/recommend/{user}", params={"k": 30, "exclude_seen": False})
        assert gone not in _item_ids(again.json()) and len(again.json()["items"]) == 30
        similar = api.get(f"/api/v1/similar/{neighbour}", params={"k": 100}).json()
        assert gone not in _item_ids(similar)
        assert api.get(f"/api/v1/similar/{gone}").status_code == 404
        popular = api.get(f"/api/v1/recommend/{new_user_id()}", params={"k": 100}).json()
        assert popular["strategy"] == "popular" and gone not in _item_ids(popular)
        stored = api.get(f"/api/v1/lists/{user}").json()
        assert sorted(_item_ids(stored)) == sorted(kept)
        assert [i["position"] for i in stored["items"]] == [1, 2]  # renumbered
        refreshed = api.post(f"/api/v1/lists/{user}", params={"k": 30}).json()
        assert gone not in _item_ids(refreshed)
        assert _in_collection(own, [gone]) == []
        assert _stored_items(settings, [gone]) == []
        # another replica: on its next tick of the deleted set (0.2 s)
        wait_for(
            lambda: (
                gone
                not in _item_ids(
                    replica.get(
                        f"/api/v1/recommend/{user}", params={"k": 30, "exclude_seen": False}
                    ).json()
                )
            ),
            timeout_s=3,
        )
        assert replica.get(f"/api/v1/similar/{gone}").status_code == 404

    missing = api.delete(f"/api/v1/items/{gone}")
    assert missing.status_code == 404 and gone in missing.json()["error"]["message"]


def test_batch_delete_of_an_unknown_id_deletes_nothing_and_upsert_brings_an_item_back(
    api, settings, data
):
    first, second = data.item_ids[10], data.item_ids[13]
    unknown = f"nope-{uuid.uuid4().hex[:6]}"
    refused = api.request("DELETE", "/api/v1/items", json={"item_ids": [first, unknown]})
    assert refused.status_code == 404
    assert refused.json()["error"]["unknown_items"] == [unknown]
    assert _stored_items(settings, [first]) == [first]

    with session_scope(settings.database_url) as session:
        row = session.get(Item, second)
        record = {"item_id": second, "title": row.title, "category": row.category}
    assert api.request("DELETE", "/api/v1/items", json={"item_ids": [second]}).status_code == 200
    assert api.get(f"/api/v1/similar/{second}").status_code == 404
    assert api.post("/api/v1/items", json=record).json()["created"] == [second]
    # the loaded model still has its factor: it is served again until the next retrain drops it
    assert api.get(f"/api/v1/similar/{second}").status_code == 200


def test_a_store_down_is_a_503_naming_it_and_nothing_is_written(own, settings, data):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    victim = data.item_ids[5]
    with session_scope(settings.database_url) as session:
        events = session.scalar(select(func.count()).where(Interaction.item_id == victim))
    with TestClient(create_app(own.model_copy(update={"redis_url": dead}))) as no_redis:
        response = no_redis.delete(f"/api/v1/items/{victim}")
        assert response.status_code == 503, response.text
        assert response.json()["error"]["store"] == "redis"
    with session_scope(settings.database_url) as session:
        assert session.get(Item, victim) is not None
        assert session.scalar(select(func.count()).where(Interaction.item_id == victim)) == events

    no_chroma = own.model_copy(update={"chroma_port": free_port()})
    with TestClient(create_app(no_chroma)) as client:
        item = _new_item("Orphan product")
        response = client.post("/api/v1/items", json=item)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["store"] == "chroma"
    assert _stored_items(settings, [item["item_id"]]) == []


def test_users_are_upserted_by_the_ingest_rules(api, settings):
    ada, bob = new_user_id("ada"), new_user_id("bob")
    refused = api.post(
        "/api/v1/users", json={"users": [{"user_id": ada}, {"user_id": ada, "name": "Two"}]}
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["fields"][0]["field"] == "users[1].user_id"
    malformed = api.post("/api/v1/users", json={"users": [{"user_id": "a b"}]})
    assert malformed.status_code == 422
    assert malformed.json()["error"]["fields"][0]["field"] == "users[0].user_id"

    created = api.post("/api/v1/users", json={"users": [{"user_id": ada, "name": "Ada"}]})
    assert created.json() == {"created": [ada], "updated": []}
    both = api.post(
        "/api/v1/users", json={"users": [{"user_id": ada, "name": "A"}, {"user_id": bob}]}
    )
    assert both.json() == {"created": [bob], "updated": [ada]}
    with session_scope(settings.database_url) as session:
        assert session.get(User, ada).name == "A"
        assert session.get(User, bob).name is None


def test_openapi_documents_the_catalogue_routes_with_examples(api):
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/api/v1/items"]) == {"post", "delete"}
    assert set(paths["/api/v1/items/{item_id}"]) == {"delete"}
    assert set(paths["/api/v1/users"]) == {"post"}
    assert set(paths["/api/v1/users/{user_id}"]) == {"delete"}
    for path in ("/api/v1/items", "/api/v1/users"):
        examples = paths[path]["post"]["requestBody"]["content"]["application/json"]["examples"]
        assert set(examples) == {"one", "batch"}
    schemas = spec["components"]["schemas"]
    for name in ("ItemIn", "ItemBatch", "ItemsUpsertOut", "ItemsDeleteOut", "ForgetOut"):
        assert schemas[name]["examples"], name
    forget = paths["/api/v1/users/{user_id}"]["delete"]["responses"]
    assert {"200", "404", "503"} <= set(forget)


def test_stored_list_rows_of_a_deleted_item_are_gone(api, settings, data):
    """The list table has no row left pointing at a deleted product (its foreign key)."""
    user, item = data.user_ids[7], data.item_ids[20]
    assert api.put(f"/api/v1/lists/{user}", json={"item_ids": [item]}).status_code == 200
    assert api.delete(f"/api/v1/items/{item}").status_code == 200
    with session_scope(settings.database_url) as session:
        rows = session.scalar(select(func.count()).where(RecommendationListItem.item_id == item))
    assert rows == 0


def test_an_item_recreated_by_an_ingest_is_served_again(api, settings, data):
    """An API upsert unmarks a deleted item itself; an ingest writing it again does not: the
    engine unmarks ids back in the item table once their deletion is PRUNE_AFTER_S old."""
    item = data.item_ids[16]
    assert api.delete(f"/api/v1/items/{item}").status_code == 200
    with session_scope(settings.database_url) as session:
        session.add(Item(item_id=item, title="Back in the catalogue file"))
    deleted = api.app.state.engine.deleted
    assert deleted.prune() == []  # a deletion this recent may still be committing
    old = (datetime.now(timezone.utc) - timedelta(seconds=PRUNE_AFTER_S + 1)).isoformat()
    redis_for(settings).hset(DELETED_KEY, item, old)
    assert deleted.prune() == [item]
    assert item not in deleted and not redis_for(settings).hexists(DELETED_KEY, item)
    assert api.get(f"/api/v1/similar/{item}").status_code == 200
