"""Several serving replicas on the same stores: a write through one reaches fold-in on the others
at once (profile invalidation over Redis pub/sub), not when their 60 s profile cache expires."""

from __future__ import annotations

import json

import redis
from fastapi.testclient import TestClient

from Prod.als_reco_engine.main import create_app
from Prod.als_reco_engine.profiles import ProfileInvalidations
from tests.reco_engine.conftest import new_user_id, wait_for


def _replica(settings):
    return TestClient(create_app(settings, poll_interval_s=0.2, popularity_interval_s=0.5))


def test_a_write_through_one_replica_is_folded_in_by_the_other_at_once(
    settings, dataset, published
):
    user = new_user_id("replica")
    audio = [i for i in dataset.item_ids if dataset.item_category[i] == "audio"][:4]
    with _replica(settings) as first, _replica(settings) as second:
        engines = [c.app.state.engine for c in (first, second)]
        for engine in engines:
            wait_for(engine.invalidations.subscribed.is_set, timeout_s=10)
        # both replicas serve (and cache) the user's empty profile
        for client in (first, second):
            assert client.get(f"/api/v1/recommend/{user}").json()["strategy"] == "popular"
        assert all(engine.profiles.cached(user) is not None for engine in engines)

        events = [{"user_id": user, "item_id": i, "event": "purchase"} for i in audio]
        assert first.post("/api/v1/interactions", json={"events": events}).status_code == 201

        # the other replica's cached profile goes within milliseconds, long before its TTL
        wait_for(lambda: engines[1].profiles.cached(user) is None, timeout_s=5, interval_s=0.01)
        assert engines[1].invalidations.received >= 1
        body = second.get(f"/api/v1/recommend/{user}", params={"k": 4}).json()
        assert body["strategy"] == "fold_in"
        assert not {i["item_id"] for i in body["items"]} & set(audio)
        assert first.get(f"/api/v1/recommend/{user}").json()["strategy"] == "fold_in"


def test_a_replica_ignores_its_own_and_malformed_messages(settings):
    seen: list[list[str] | None] = []
    bus = ProfileInvalidations(settings.redis_url, seen.append)
    bus.start()
    try:
        wait_for(bus.subscribed.is_set, timeout_s=10)
        assert seen == [None]  # subscribing forgets everything: earlier messages are lost
        bus.publish(["u-own"])
        other = redis.Redis.from_url(settings.redis_url)
        other.publish(ProfileInvalidations.CHANNEL, b"not json")
        other.publish(
            ProfileInvalidations.CHANNEL, json.dumps({"origin": "elsewhere", "users": ["u-2"]})
        )
        wait_for(lambda: len(seen) == 2, timeout_s=5)
        assert seen == [None, ["u-2"]] and bus.received == 1
        other.close()
    finally:
        bus.stop()


def test_publishing_with_redis_down_is_logged_not_raised(caplog):
    bus = ProfileInvalidations("redis://127.0.0.1:1/0", lambda users: None)
    bus.publish(["u-1"])  # connection refused: the peers rely on their TTL
    assert "profile invalidation not published" in caplog.text
    bus.stop()
