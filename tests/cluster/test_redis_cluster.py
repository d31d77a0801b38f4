"""The platform on a real 3-master Redis Cluster: every multi-key operation stays in one slot,
scans and pub/sub reach every master, and the trainer, the engine and the lock work end to end.
Plus the upgrade path on a standalone Redis: keys named before the hash tags are still found."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from fastapi.testclient import TestClient
from redis.crc import key_slot

from Prod.als_reco_engine import deleted_items, forget
from Prod.als_reco_engine.deleted_items import DeletedItems
from Prod.als_reco_engine.main import create_app
from Prod.als_reco_engine.profiles import ProfileInvalidations
from Prod.als_trainer import lock, publisher
from Prod.als_trainer.lock import TrainerLock, lock_holder, reap_dead_lock
from Prod.als_trainer.service import rollback
from Prod.common import experiment, model_store
from Prod.common.stores import get_redis, is_cluster, redis_for, redis_from_url
from tests.reco_engine.conftest import new_user_id, wait_for
from tests.utils.publish import train_and_publish
from tests.utils.redis_cluster import free_cluster_port


def _slot(key: str) -> int:
    return key_slot(key.encode())


# --- keys -------------------------------------------------------------------------------------


def test_keys_of_one_operation_share_a_slot():
    """Each transaction, script or watched pair names keys of one slot (a cluster refuses
    CROSSSLOT otherwise); different versions' data spreads over slots."""
    together = {
        "switch / rollback (WATCH + MULTI/EXEC)": [
            model_store.ACTIVE_KEY,
            model_store.PREVIOUS_KEY,
        ],
        "trainer lock scripts": [lock.LOCK_KEY, lock.heartbeat_key()],
        "deleted items MULTI/EXEC": [deleted_items.DELETED_KEY, deleted_items.VERSION_KEY],
        "A/B test MULTI/EXEC": [experiment.EXPERIMENT_KEY, experiment.EXPERIMENTS_KEY],
    }
    for operation, keys in together.items():
        assert len({_slot(k) for k in keys}) == 1, operation
    # the engine's copy of the lock name (services never import each other) is the trainer's
    assert forget.TRAINER_LOCK_KEY == lock.LOCK_KEY
    # the big per-version hashes carry no tag: 20 versions land on many slots
    versions = [f"20260101T0000{i:02d}.000Z-abc123" for i in range(20)]
    factor_slots = {_slot(model_store.user_factors_key(v)) for v in versions}
    assert len(factor_slots) >= 15
    assert _slot(model_store.user_factors_key(versions[0])) != _slot(model_store.ACTIVE_KEY)


def test_cluster_url_gives_a_cluster_client(redis_cluster):
    client = redis_from_url(redis_cluster.url)
    assert is_cluster(client) and client.ping()
    masters = [n for n in client.get_nodes() if n.server_type == "primary"]
    assert len(masters) == 3
    assert not is_cluster(redis_from_url("redis://127.0.0.1:1/0"))
    client.close()


# --- the cluster's own behaviour that the platform relies on --------------------------------


def test_scan_visits_every_master(redis_cluster):
    client = get_redis(redis_cluster.url)
    keys = [model_store.user_factors_key(f"scan{i:02d}-{uuid.uuid4().hex[:6]}") for i in range(24)]
    for key in keys:
        client.hset(key, "u", b"x")
    try:
        holders = {client.get_node_from_key(k).name for k in keys}
        assert len(holders) == 3  # the keys really are spread over the masters
        found = {k.decode() for k in client.scan_iter(match="reco:model:*:user_factors", count=5)}
        assert set(keys) <= found
    finally:
        client.delete(*keys)


def test_pubsub_reaches_a_subscriber_on_another_master(redis_cluster):
    """Profile invalidations: a PUBLISH sent to any master reaches a listener on another."""
    seen: list[list[str] | None] = []
    bus = ProfileInvalidations(redis_cluster.url, seen.append)
    bus.start()
    try:
        wait_for(bus.subscribed.is_set, timeout_s=10)
        listener_node = get_redis(redis_cluster.url).get_node_from_key(bus.CHANNEL).port
        other_port = next(p for p in redis_cluster.ports if p != listener_node)
        sender = redis_cluster.node(other_port)
        body = json.dumps({"origin": "replica-b", "users": ["u-across"]})
        assert sender.publish(ProfileInvalidations.CHANNEL, body) >= 0
        wait_for(lambda: ["u-across"] in seen, timeout_s=5, interval_s=0.02)
        assert bus.received == 1
        sender.close()
    finally:
        bus.stop()


# --- the platform on the cluster ------------------------------------------------------------


def test_trainer_publishes_switches_and_rolls_back_on_the_cluster(
    cluster_settings, cluster_published
):
    client = redis_for(cluster_settings)
    assert is_cluster(client)
    first = cluster_published
    second = train_and_publish(cluster_settings)
    assert publisher.read_pointers(client) == publisher.Pointers(second, first)
    meta = model_store.read_meta(client, second)
    assert meta is not None and meta.n_users == client.hlen(model_store.user_factors_key(second))
    assert {first, second} <= publisher.published_versions(client, _chroma(cluster_settings))

    answer = rollback(cluster_settings)
    assert answer["active"] == first and answer["changed"]
    assert publisher.read_pointers(client) == publisher.Pointers(first, second)
    # and forward again, so later tests serve the newest model
    rollback(cluster_settings, second)
    assert model_store.active_version(client) == second


def test_engine_serves_folds_in_hides_deleted_items_and_forgets_on_the_cluster(
    cluster_settings, cluster_dataset, cluster_published
):
    client = redis_for(cluster_settings)
    trained = cluster_dataset.user_ids[0]
    app = create_app(cluster_settings, poll_interval_s=0.2, popularity_interval_s=0.5)
    with TestClient(app) as api:
        engine = app.state.engine
        wait_for(lambda: engine.holder.current is not None, timeout_s=60)
        active = model_store.active_version(client)
        wait_for(lambda: engine.holder.current.version == active, timeout_s=60)
        body = api.get(f"/api/v1/recommend/{trained}", params={"k": 5}).json()
        assert body["strategy"] == "als" and body["model_version"] == active
        assert api.get(f"/api/v1/similar/{cluster_dataset.item_ids[0]}").status_code == 200

        # fold-in of a new user, read through the cluster's factor store and Postgres
        user = new_user_id("cluster")
        liked = [i for i in cluster_dataset.item_ids if cluster_dataset.item_category[i] == "books"]
        events = [{"user_id": user, "item_id": i, "event": "purchase"} for i in liked[:3]]
        assert api.post("/api/v1/interactions", json={"events": events}).status_code == 201
        assert api.get(f"/api/v1/recommend/{user}").json()["strategy"] == "fold_in"

        # a deleted item leaves every answer; the deleted-items hash lives on the cluster
        doomed = body["items"][0]["item_id"]
        assert api.delete(f"/api/v1/items/{doomed}").status_code == 200
        assert client.hexists(deleted_items.DELETED_KEY, doomed)
        again = api.get(f"/api/v1/recommend/{trained}", params={"k": 10}).json()
        assert doomed not in {i["item_id"] for i in again["items"]}
        engine.deleted.refresh()  # what every replica's ticker reads back from the cluster
        assert doomed in engine.deleted and int(client.get(deleted_items.VERSION_KEY)) >= 1

        # forgetting removes the factor from every stored version, wherever its hash lives
        holders = [
            v
            for v in publisher.published_versions(client, _chroma(cluster_settings))
            if client.hexists(model_store.user_factors_key(v), trained)
        ]
        assert holders
        gone = api.delete(f"/api/v1/users/{trained}")
        assert gone.status_code == 200, gone.text
        assert set(holders) <= set(gone.json()["redis"]["model_versions"])
        assert not any(client.hexists(model_store.user_factors_key(v), trained) for v in holders)


def test_trainer_lock_on_the_cluster(cluster_settings):
    client = redis_for(cluster_settings)
    key = f"{lock.LOCK_KEY}:test-{uuid.uuid4().hex[:6]}"  # same hash tag, own lock
    held = TrainerLock(client, "v-one", ttl_s=30, key=key, heartbeat=False)
    assert held.acquire() and lock_holder(client, key) == "v-one"
    assert not TrainerLock(client, "v-two", ttl_s=30, key=key, heartbeat=False).acquire()
    assert held.renew() and reap_dead_lock(client, key) is None  # its heartbeat is live
    client.delete(lock.heartbeat_key(key))  # as if its process died
    assert reap_dead_lock(client, key) == "v-one" and lock_holder(client, key) is None
    with TrainerLock(client, "v-three", ttl_s=30, key=key) as beating:
        assert beating.acquire() and lock_holder(client, key) == "v-three"
    assert lock_holder(client, key) is None


def test_ab_test_starts_and_stops_on_the_cluster(cluster_settings, cluster_published):
    client = redis_for(cluster_settings)
    pointers = publisher.read_pointers(client)
    other = pointers.previous or train_and_publish(cluster_settings)
    if other == model_store.active_version(client):
        pytest.fail("no second published version to test with")
    started = experiment.start_experiment(client, version_b=other, share_b=0.5)
    try:
        assert experiment.running_experiment(client) == started
        assert experiment.protected_versions(client) == {other}
    finally:
        stopped = experiment.stop_experiment(client)
    assert experiment.find_experiment(client, started.experiment_id) == stopped


def test_a_cluster_that_is_down_is_a_redis_outage_not_a_crash(cluster_settings, cluster_published):
    """redis-py raises RedisClusterException (not a RedisError) when no node answers; the
    platform sees a RedisError, so its fallbacks and 503s apply, and it starts without Redis."""
    dead = cluster_settings.model_copy(
        update={"redis_url": f"redis+cluster://127.0.0.1:{free_cluster_port()}/0"}
    )
    client = redis_from_url(dead.redis_url)  # built on first use: nothing raised yet
    with pytest.raises(redis.RedisError):
        client.get(model_store.ACTIVE_KEY)
    with pytest.raises(redis.RedisError):
        client.pipeline(transaction=True).set(model_store.ACTIVE_KEY, "v").execute()
    app = create_app(dead, poll_interval_s=0.2, popularity_interval_s=0.5)
    with TestClient(app) as api:
        body = api.get(f"/api/v1/recommend/{new_user_id('down')}").json()
        assert body["strategy"] == "popular"  # popularity from Postgres
        gone = api.delete(f"/api/v1/users/{new_user_id('down')}")
        assert gone.status_code == 503 and gone.json()["error"]["store"] == "redis"
        listener = app.state.engine.invalidations
        assert listener._thread.is_alive() and not listener.subscribed.is_set()


# --- upgrade from the names before the hash tags (standalone Redis) --------------------------


@pytest.fixture
def empty_db(settings):
    """A client of an unused database of the session's standalone Redis (db 13)."""
    url = settings.redis_url.rsplit("/", 1)[0] + "/13"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def test_old_pointer_names_are_read_until_the_first_switch(empty_db):
    client = empty_db
    old, older, new = "20250101T000000.000Z-aaaaaa", "20240101T000000.000Z-bbbbbb", "2026-new"
    client.set(model_store.LEGACY_ACTIVE_KEY, old)
    client.set(model_store.LEGACY_PREVIOUS_KEY, older)
    assert publisher.read_pointers(client) == publisher.Pointers(old, older)
    client.hset(model_store.meta_key(new), mapping={"version": new})
    assert publisher.switch_active(client, new) == publisher.Pointers(old, older)
    assert publisher.read_pointers(client) == publisher.Pointers(new, old)
    client.delete(model_store.PREVIOUS_KEY)  # the new names rule now, even with previous unset
    assert model_store.previous_version(client) is None
    assert client.get(model_store.LEGACY_ACTIVE_KEY) == old.encode()  # nothing deleted


def test_old_deleted_items_hash_moves_on_the_first_sync(empty_db):
    client = empty_db
    client.hset(deleted_items.LEGACY_DELETED_KEY, mapping={"p-old": "2025-01-01T00:00:00+00:00"})
    client.hset(deleted_items.DELETED_KEY, mapping={"p-new": "2026-01-01T00:00:00+00:00"})
    replica = DeletedItems(client)
    assert replica.refresh()
    assert "p-old" in replica and "p-new" in replica
    assert not client.exists(deleted_items.LEGACY_DELETED_KEY)
    assert client.hget(deleted_items.DELETED_KEY, "p-new") == b"2026-01-01T00:00:00+00:00"
    assert deleted_items.adopt_legacy_hash(client) == 0  # moved once


def test_old_experiment_keys_are_read_until_rewritten(empty_db):
    client = empty_db
    running = experiment.Experiment("ab-old", "2025-b", 0.2, "2025-01-01T00:00:00+00:00")
    client.set(experiment.LEGACY_EXPERIMENT_KEY, running.to_json())
    client.hset(experiment.LEGACY_EXPERIMENTS_KEY, "ab-old", running.to_json())
    assert experiment.protected_versions(client) == {"2025-b"}
    stopped = experiment.stop_experiment(client)
    assert experiment.read_experiment(client) == stopped and not stopped.running
    assert experiment.find_experiment(client, "ab-old") == stopped


def _chroma(settings):
    from Prod.common.stores import chroma_for

    return chroma_for(settings)
