"""POST /interactions, fold-in for new users, history and stored lists."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from Prod.als_reco_engine.interactions import record_interactions
from Prod.common.db import get_engine, session_scope
from Prod.common.errors import InvalidInput
from Prod.common.models import Interaction, SuppressedItem, User
from tests.reco_engine.conftest import new_user_id


def _items_of(dataset, category: str) -> list[str]:
    return [i for i in dataset.item_ids if dataset.item_category[i] == category]


def test_single_event_is_committed_and_creates_the_user(client, dataset, settings):
    user = new_user_id()
    event = {"user_id": user, "item_id": dataset.item_ids[0], "event": "purchase"}
    response = client.post("/api/v1/interactions", json=event)
    assert response.status_code == 201
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "created_users": [user],
        "user_ids": [user],
    }
    with session_scope(settings.database_url) as session:
        assert session.get(User, user) is not None
        rows = session.scalars(select(Interaction).where(Interaction.user_id == user)).all()
    assert [(r.item_id, r.event, r.weight) for r in rows] == [
        (dataset.item_ids[0], "purchase", 8.0)
    ]


def test_new_user_fold_in_reflects_what_they_just_did(client, dataset):
    """A brand-new user buys three audio products: their recommendations lean to audio."""
    user = new_user_id("fold")
    assert client.get(f"/api/v1/recommend/{user}").json()["strategy"] == "popular"
    audio = _items_of(dataset, "audio")
    events = [{"user_id": user, "item_id": i, "event": "purchase"} for i in audio[:4]]
    assert client.post("/api/v1/interactions", json={"events": events}).status_code == 201
    body = client.get(f"/api/v1/recommend/{user}", params={"k": 4}).json()
    assert body["strategy"] == "fold_in"
    ids = [i["item_id"] for i in body["items"]]
    assert not set(ids) & set(audio[:4])  # just-seen items are removed at once
    ours = [i for i in ids if i in dataset.item_category]
    in_audio = sum(dataset.item_category[i] == "audio" for i in ours)
    assert ours and in_audio / len(ours) >= 0.5, ids


def test_known_user_with_new_events_is_folded_in(client, dataset):
    user = dataset.user_ids[5]
    assert client.get(f"/api/v1/recommend/{user}").json()["strategy"] == "als"
    event = {"user_id": user, "item_id": dataset.item_ids[7], "event": "click"}
    assert client.post("/api/v1/interactions", json=event).status_code == 201
    body = client.get(f"/api/v1/recommend/{user}", params={"k": 30}).json()
    assert body["strategy"] == "fold_in"
    assert dataset.item_ids[7] not in {i["item_id"] for i in body["items"]}


def test_batch_with_unknown_item_is_rejected_whole(client, dataset, settings):
    user = new_user_id()
    events = [
        {"user_id": user, "item_id": dataset.item_ids[0], "event": "view"},
        {"user_id": user, "item_id": "no-such-item-1", "event": "view"},
    ]
    response = client.post("/api/v1/interactions", json={"events": events})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["unknown_items"] == ["no-such-item-1"] and "no-such-item-1" in error["message"]
    with session_scope(settings.database_url) as session:
        assert session.get(User, user) is None
        assert not session.scalars(select(Interaction).where(Interaction.user_id == user)).all()


def test_malformed_events_are_422(client, dataset):
    item = dataset.item_ids[0]
    bad = [
        {"user_id": "u1", "item_id": item, "event": "teleport"},
        {"user_id": "u1", "item_id": item, "event": "rating"},  # rating missing
        {"user_id": "u1", "item_id": item, "event": "view", "rating": 3},
        {"user_id": "u1", "item_id": item, "event": "view", "weight": -1},
        {"user_id": "", "item_id": item, "event": "view"},
        {"user_id": "u1", "item_id": item, "event": "view", "timestamp": "2999-01-01T00:00:00"},
        {"events": []},
    ]
    for body in bad:
        response = client.post("/api/v1/interactions", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["type"] == "invalid_input"


def test_interaction_422_names_the_field_not_pydantic_internals(client, dataset):
    # regression: messages named `function-after[_check(), InteractionIn]` and both union branches
    item = dataset.item_ids[0]
    cases = {
        "event: must be 'view'": {"user_id": "u1", "item_id": item, "event": "teleport"},
        "rating is required when event is 'rating'": {
            "user_id": "u1",
            "item_id": item,
            "event": "rating",
        },
        "user_id: must match pattern": {"user_id": "", "item_id": item, "event": "view"},
        "colour: unknown field": {
            "user_id": "u1",
            "item_id": item,
            "event": "view",
            "colour": "red",
        },
        "events: must have at least 1 item": {"events": []},
        "events[1].weight: must be greater than 0 (got -1)": {
            "events": [
                {"user_id": "u1", "item_id": item, "event": "view"},
                {"user_id": "u1", "item_id": item, "event": "view", "weight": -1},
            ]
        },
        "user_id: required; item_id: required; event: required": {},
    }
    for expected, body in cases.items():
        response = client.post("/api/v1/interactions", json=body)
        assert response.status_code == 422, body
        error = response.json()["error"]
        assert error["type"] == "invalid_input" and expected in error["message"], error
        for internal in ("function-after", "InteractionIn", "InteractionBatch", "Value error"):
            assert internal not in response.text, (internal, error)


def test_resent_event_is_counted_as_duplicate(client, dataset):
    event = {
        "user_id": new_user_id(),
        "item_id": dataset.item_ids[1],
        "event": "rating",
        "rating": 4,
        "timestamp": "2025-03-01T10:00:00Z",
    }
    assert client.post("/api/v1/interactions", json=event).json()["accepted"] == 1
    again = client.post("/api/v1/interactions", json=event).json()
    assert again["accepted"] == 0 and again["duplicates"] == 1 and again["created_users"] == []


def test_history_lists_served_recommendations_newest_first(client, dataset):
    user = new_user_id("history")  # a user no other test was served for
    client.post(
        "/api/v1/interactions",
        json={"user_id": user, "item_id": dataset.item_ids[8], "event": "click"},
    )
    served = [client.get(f"/api/v1/recommend/{user}", params={"k": k}).json() for k in (3, 4, 5)]
    page = client.get("/api/v1/history", params={"user_id": user, "limit": 2}).json()
    assert page["total"] == 3 and page["has_more"] is True and len(page["entries"]) == 2
    newest = page["entries"][0]
    assert newest["request"]["k"] == 5 and newest["strategy"] == served[2]["strategy"]
    assert [i["item_id"] for i in newest["items"]] == [i["item_id"] for i in served[2]["items"]]
    rest = client.get("/api/v1/history", params={"user_id": user, "limit": 2, "offset": 2}).json()
    assert [e["request"]["k"] for e in rest["entries"]] == [3] and rest["has_more"] is False
    everyone = client.get("/api/v1/history", params={"limit": 5}).json()
    assert everyone["user_id"] is None and everyone["total"] >= 3


def test_stored_list_create_read_update_delete(client, dataset, settings):
    user = dataset.user_ids[9]
    assert client.get(f"/api/v1/lists/{user}").status_code == 404
    created = client.post(f"/api/v1/lists/{user}", params={"k": 6})
    assert created.status_code == 201
    body = created.json()
    assert len(body["items"]) == 6 and body["strategy"] == "als"
    assert [i["position"] for i in body["items"]] == list(range(1, 7))
    assert client.get(f"/api/v1/lists/{user}").json()["items"] == body["items"]

    # PUT: given products, re-scored by the model and sorted by score
    chosen = dataset.item_ids[10:14]
    updated = client.put(f"/api/v1/lists/{user}", json={"item_ids": chosen}).json()
    assert sorted(i["item_id"] for i in updated["items"]) == sorted(chosen)
    scores = [i["score"] for i in updated["items"]]
    assert scores == sorted(scores, reverse=True)
    unknown = client.put(f"/api/v1/lists/{user}", json={"item_ids": ["nope-item"]})
    assert unknown.status_code == 422 and unknown.json()["error"]["unknown_items"] == ["nope-item"]

    # DELETE: removed from the list and never recommended again
    doomed = updated["items"][0]["item_id"]
    removed = client.delete(f"/api/v1/lists/{user}/items", params={"item_id": doomed}).json()
    assert removed["removed"] == [doomed]
    assert doomed not in {i["item_id"] for i in removed["items"]}
    assert [i["position"] for i in removed["items"]] == list(range(1, 4))
    with session_scope(settings.database_url) as session:
        assert session.get(SuppressedItem, (user, doomed)) is not None
    for exclude_seen in ("true", "false"):
        recs = client.get(
            f"/api/v1/recommend/{user}", params={"k": 100, "exclude_seen": exclude_seen}
        ).json()
        assert doomed not in {i["item_id"] for i in recs["items"]}


def test_delete_list_items_accepts_a_json_body(client, dataset):
    user = new_user_id("lists")
    client.put(f"/api/v1/lists/{user}", json={"item_ids": dataset.item_ids[:3]})
    response = client.request(
        "DELETE", f"/api/v1/lists/{user}/items", json={"item_ids": dataset.item_ids[:2]}
    )
    assert response.status_code == 200
    assert [i["item_id"] for i in response.json()["items"]] == [dataset.item_ids[2]]
    assert client.delete(f"/api/v1/lists/{user}/items").status_code == 422


def test_put_does_not_bring_back_a_suppressed_item(client, dataset, settings):
    """Issue 15.4: PUT re-added products that DELETE .../items had suppressed."""
    user = new_user_id("lists-put")
    chosen = dataset.item_ids[20:23]
    client.put(f"/api/v1/lists/{user}", json={"item_ids": chosen})
    doomed = chosen[0]
    client.delete(f"/api/v1/lists/{user}/items", params={"item_id": doomed})
    response = client.put(f"/api/v1/lists/{user}", json={"item_ids": chosen})
    assert response.status_code == 200
    body = response.json()
    assert body["skipped_suppressed"] == [doomed]
    assert sorted(i["item_id"] for i in body["items"]) == sorted(chosen[1:])
    assert doomed not in {i["item_id"] for i in client.get(f"/api/v1/lists/{user}").json()["items"]}
    with session_scope(settings.database_url) as session:
        assert session.get(SuppressedItem, (user, doomed)) is not None
    # only suppressed products given: an empty list, not an error
    only = client.put(f"/api/v1/lists/{user}", json={"item_ids": [doomed]}).json()
    assert only["items"] == [] and only["skipped_suppressed"] == [doomed]


def test_a_suppression_can_be_undone(client, dataset, settings):
    user = new_user_id("lists-undo")
    popular = client.get(f"/api/v1/recommend/{user}", params={"k": 3}).json()["items"]
    chosen = [i["item_id"] for i in popular]
    client.put(f"/api/v1/lists/{user}", json={"item_ids": chosen})
    doomed = chosen[0]
    client.delete(f"/api/v1/lists/{user}/items", params={"item_id": doomed})
    recs = client.get(f"/api/v1/recommend/{user}", params={"k": 100}).json()
    assert doomed not in {i["item_id"] for i in recs["items"]}

    restored = client.delete(
        f"/api/v1/lists/{user}/suppressions", params={"item_id": [doomed, chosen[1]]}
    )
    assert restored.status_code == 200
    assert restored.json() == {
        "user_id": user,
        "restored": [doomed],
        "not_suppressed": [chosen[1]],
    }
    with session_scope(settings.database_url) as session:
        assert session.get(SuppressedItem, (user, doomed)) is None
    recs = client.get(f"/api/v1/recommend/{user}", params={"k": 100}).json()
    assert doomed in {i["item_id"] for i in recs["items"]}
    again = client.put(f"/api/v1/lists/{user}", json={"item_ids": chosen}).json()
    assert again["skipped_suppressed"] == []
    assert sorted(i["item_id"] for i in again["items"]) == sorted(chosen)

    # nothing to restore: 404 in the project's error shape; no products: 422
    missing = client.delete(f"/api/v1/lists/{user}/suppressions", params={"item_id": doomed})
    assert missing.status_code == 404 and missing.json()["error"]["user_id"] == user
    assert client.delete(f"/api/v1/lists/{user}/suppressions").status_code == 422
    body = client.request(
        "DELETE", f"/api/v1/lists/{user}/suppressions", json={"item_ids": ["bad id"]}
    )
    assert body.status_code == 422


def test_delete_removes_the_whole_list(client, dataset, settings):
    """Issue 15.4: DELETE /lists/{user_id} was a 405."""
    user = new_user_id("lists-del")
    chosen = dataset.item_ids[24:27]
    client.put(f"/api/v1/lists/{user}", json={"item_ids": chosen})
    client.delete(f"/api/v1/lists/{user}/items", params={"item_id": chosen[0]})
    response = client.delete(f"/api/v1/lists/{user}")
    assert response.status_code == 204 and response.content == b""
    assert client.get(f"/api/v1/lists/{user}").status_code == 404
    again = client.delete(f"/api/v1/lists/{user}")
    assert again.status_code == 404
    assert again.json()["error"]["user_id"] == user
    # the suppression is the customer's "never again", not part of the list: it stays
    with session_scope(settings.database_url) as session:
        assert session.get(SuppressedItem, (user, chosen[0])) is not None


def test_far_future_unix_timestamp_is_rejected_not_read_as_milliseconds(client, dataset, settings):
    """Issue 13 item 13: 32503680000 (year 3000 in seconds) was read as milliseconds and stored
    as 1971; the CSV ingest rejects it. One rule (Prod/common/timestamps.py) for both."""
    user = new_user_id("stamp")
    event = {"user_id": user, "item_id": dataset.item_ids[2], "event": "view"}
    for stamp in (32503680000, 1735689600000, "1735689600²", 1735689600.5, 0, True):
        response = client.post("/api/v1/interactions", json={**event, "timestamp": stamp})
        assert response.status_code == 422, stamp
        error = response.json()["error"]
        assert error["type"] == "invalid_input" and "timestamp" in error["message"], error
    millis = client.post("/api/v1/interactions", json={**event, "timestamp": 1735689600000})
    assert "milliseconds?" in millis.json()["error"]["message"]

    for stamp in (1735689600, "1735689600", "2025-01-01T00:00:00Z", "2025-01-01T01:00:00+01:00"):
        response = client.post("/api/v1/interactions", json={**event, "timestamp": stamp})
        assert response.status_code == 201, (stamp, response.text)
    with session_scope(settings.database_url) as session:
        rows = session.scalars(select(Interaction).where(Interaction.user_id == user)).all()
    assert [r.occurred_at.isoformat() for r in rows] == ["2025-01-01T00:00:00+00:00"]


def test_record_interactions_forgets_the_users_only_after_a_commit(settings, dataset):
    """The service function on its own: the engine state it touches is passed explicitly."""
    db, forgotten = get_engine(settings.database_url), []
    user = new_user_id("direct")
    event = {"user_id": user, "item_id": dataset.item_ids[4], "event": "add_to_cart"}
    unknown = {**event, "item_id": "no-such-item-2"}
    with pytest.raises(InvalidInput, match="no-such-item-2"):
        record_interactions(db=db, events=[event, unknown], forget_users=forgotten.extend)
    assert forgotten == []
    result = record_interactions(db=db, events=[event], forget_users=forgotten.extend)
    assert result == {"accepted": 1, "duplicates": 0, "created_users": [user], "user_ids": [user]}
    assert forgotten == [user]
    with session_scope(settings.database_url) as session:
        rows = session.scalars(select(Interaction).where(Interaction.user_id == user)).all()
    assert [(r.item_id, r.event, r.weight) for r in rows] == [
        (dataset.item_ids[4], "add_to_cart", 4.0)
    ]
