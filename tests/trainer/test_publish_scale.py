"""The publish path that scales: item factors in a Redis items hash before the switch, the
Chroma collection filled from it after (Prod.als_trainer.publisher). Real trainer processes
killed either side of the switch, the engine serving a version published this way exactly as the
same factors published the old way (items only in Chroma), and the engine while Chroma fills."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from Prod.als_reco_engine.main import create_app
from Prod.als_trainer import publisher
from Prod.als_trainer.lock import heartbeat_key
from Prod.als_trainer.service import (
    fail_dead_runs,
    mirror_pointers,
    register_version,
    run_training,
)
from Prod.common import model_store
from Prod.common.stores import chroma_for, redis_for
from tests.utils.publish import insert_dataset, train_and_publish
from tests.utils.trainer_process import start_trainer

USERS = 8  # users whose answers are compared


@pytest.fixture(scope="module")
def data(settings):
    return insert_dataset(settings, n_users=30, n_items=24, events_per_user=8, seed=29)


@pytest.fixture(scope="module")
def engine(settings, data):
    """The serving app on the shared stores, a model of ``data`` active; polls every 0.2 s."""
    train_and_publish(settings)
    app = create_app(settings, poll_interval_s=0.2, popularity_interval_s=0.5)
    with TestClient(app) as http:
        yield http


def serving(http, version: str, timeout_s: float = 60.0) -> dict:
    """/status once the engine has loaded ``version``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = http.get("/api/v1/status").json()
        if status["model_version"] == version:
            return status
        time.sleep(0.1)
    raise AssertionError(f"the engine did not load {version}: {status}")


def answers(http, data) -> list[dict]:
    """Recommendations and similar items of the first users/items, without the version id."""
    out = []
    for path in [f"/api/v1/recommend/{u}" for u in data.user_ids[:USERS]] + [
        f"/api/v1/similar/{i}" for i in data.item_ids[:4]
    ]:
        response = http.get(path, params={"k": 10})
        assert response.status_code == 200, response.text
        body = response.json()
        body.pop("model_version", None)
        out.append(body)
    return out


def killed_at(settings, stage: str) -> str:
    """A real forced training run in its own process, SIGKILLed when ``stage`` starts; waits
    until its lock heartbeat is gone (a dead run). Returns its version id."""
    version = publisher.new_version_id()
    proc = start_trainer(settings, "tests.trainer._publish_crash", version, stage)
    try:
        assert proc.stdout.readline().strip() == "reached"
    finally:
        proc.send_signal(signal.SIGKILL)  # no cleanup of any kind
        proc.wait(30)
    client = redis_for(settings)
    deadline = time.monotonic() + 30
    while client.exists(heartbeat_key()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return version


def test_a_crash_before_the_switch_leaves_the_previous_version_active_and_serving(
    settings, data, engine
):
    client, chroma = redis_for(settings), chroma_for(settings)
    old = model_store.active_version(client)
    before = answers(engine, data)
    version = killed_at(settings, "verify")  # user factors and the items hash written, no meta
    assert client.exists(model_store.items_key(version))
    assert not client.exists(model_store.meta_key(version))
    assert model_store.active_version(client) == old
    time.sleep(1.0)  # five polls of the engine: nothing to load
    assert serving(engine, old)["model_version"] == old
    assert answers(engine, data) == before

    assert version in fail_dead_runs(settings)  # what the next run or /status does first
    assert not client.exists(model_store.items_key(version))
    assert version not in publisher.published_versions(client, chroma)


def test_a_crash_while_chroma_fills_leaves_the_new_version_active_and_the_next_run_fills_it(
    settings, data, engine
):
    client, chroma = redis_for(settings), chroma_for(settings)
    old = model_store.active_version(client)
    version = killed_at(settings, "index_items")  # switched, Chroma not written
    assert publisher.read_pointers(client) == publisher.Pointers(version, old)
    meta = model_store.read_meta(client, version)
    assert model_store.item_index_state(meta) == model_store.INDEX_FILLING
    assert meta.collection not in publisher.list_item_collections(chroma)
    status = serving(engine, version)
    assert status["item_index"] == {
        "source": "redis",
        "collection": meta.collection,
        "state": "filling",
    }
    body = engine.get(f"/api/v1/recommend/{data.user_ids[0]}").json()
    assert body["model_version"] == version and body["strategy"] == "als" and body["items"]

    following = run_training(settings, force=True, evaluate=False)
    assert following.status == "active", following.error
    assert model_store.previous_version(client) == version
    meta = model_store.read_meta(client, version)
    assert model_store.item_index_state(meta) == model_store.INDEX_COMPLETE
    assert chroma.get_collection(meta.collection).count() == meta.n_items


def test_the_engine_serves_a_version_from_redis_exactly_as_from_chroma(settings, data, engine):
    client, chroma = redis_for(settings), chroma_for(settings)
    fast = train_and_publish(settings)
    meta = model_store.read_meta(client, fast)
    item_ids, item_factors, metadatas = model_store.read_items(client, meta)
    # the same factors published the old way: items only in Chroma, a meta without ``items``
    slow = publisher.new_version_id()
    register_version(settings.database_url, slow, int(meta.extra["data_watermark"]), {})
    old_way = replace(
        meta,
        version=slow,
        collection=model_store.item_collection_name(slow),
        extra={
            k: v
            for k, v in meta.extra.items()
            if k not in (model_store.ITEMS_FIELD, model_store.ITEM_INDEX_FIELD)
        },
    )
    client.hset(
        model_store.user_factors_key(slow),
        mapping=client.hgetall(model_store.user_factors_key(fast)),
    )
    collection = publisher.write_item_factors(chroma, slow, item_ids, item_factors, metadatas)
    publisher.verify_item_factors(collection, item_ids, item_factors)
    publisher.write_meta(client, old_way)

    served, sources = {}, {}
    for version in (slow, fast):
        publisher.switch_active(client, version)
        mirror_pointers(settings.database_url, publisher.read_pointers(client))
        sources[version] = serving(engine, version)["item_index"]["source"]
        served[version] = answers(engine, data)
    assert sources == {slow: "chroma", fast: "redis"}
    assert served[fast] == served[slow]
    assert [len(a["items"]) for a in served[fast]] == [10] * (USERS + 4)


def test_while_chroma_fills_the_engine_serves_the_new_version_and_says_filling(
    settings, data, engine
):
    client, chroma = redis_for(settings), chroma_for(settings)
    inside, resume = threading.Event(), threading.Event()
    runs = {}

    def hold(stage: str) -> None:
        if stage == "index_items":
            inside.set()
            assert resume.wait(120)

    thread = threading.Thread(
        target=lambda: runs.setdefault(
            "run", run_training(settings, force=True, evaluate=False, on_stage=hold)
        )
    )
    thread.start()
    try:
        assert inside.wait(120)
        version = model_store.active_version(client)
        meta = model_store.read_meta(client, version)
        assert meta.collection not in publisher.list_item_collections(chroma)
        status = serving(engine, version)  # switched before Chroma holds anything
        assert status["item_index"]["state"] == "filling" and status["item_count"] == meta.n_items
        body = engine.get(f"/api/v1/recommend/{data.user_ids[1]}").json()
        assert body["model_version"] == version and body["strategy"] == "als"
        similar = engine.get(f"/api/v1/similar/{data.item_ids[0]}")
        assert similar.status_code == 200 and similar.json()["items"]
    finally:
        resume.set()
        thread.join(120)
    assert runs["run"].status == "active" and "index_items" in runs["run"].durations
    assert engine.get("/api/v1/status").json()["item_index"]["state"] == "complete"
    assert chroma.get_collection(meta.collection).count() == meta.n_items


def test_the_items_hash_reads_back_across_chunks_and_a_missing_chunk_is_refused(
    settings, monkeypatch
):
    client = redis_for(settings)
    rng = np.random.default_rng(5)
    version, dim, n = publisher.new_version_id(), 8, 40
    monkeypatch.setattr(model_store, "ITEM_CHUNK_BYTES", 7 * 4 * dim)  # 7 rows a chunk: 6 chunks
    item_ids = [f"c{version}-{j}" for j in range(n)]
    factors = rng.standard_normal((n, dim)).astype(np.float32)
    metadata = [{"title": f"t{j}"} if j % 3 else {} for j in range(n)]
    meta = model_store.ModelMeta(
        version, dim, 0, n, model_store.item_collection_name(version), 1.0, 0.1
    )
    try:
        publisher.write_items(client, version, item_ids, factors, metadata)
        assert client.hlen(model_store.items_key(version)) == 1 + 3 * 6
        ids, matrix, metas = model_store.read_items(client, meta)
        assert ids == item_ids and np.array_equal(matrix, factors)
        assert metas == [m or {} for m in metadata]
        publisher.verify_items(client, meta, item_ids, factors)
        client.hdel(model_store.items_key(version), "vectors:3")
        with pytest.raises(ValueError, match="chunk 3"):
            model_store.read_items(client, meta)
        with pytest.raises(ValueError, match="chunk 3"):
            publisher.verify_items(client, meta, item_ids, factors)
    finally:
        client.unlink(model_store.items_key(version))
