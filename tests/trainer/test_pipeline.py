"""The whole run against real Postgres/Redis/Chroma: train, publish, switch, fail safely, skip,
lock, cleanup, rollback mirrored in the registry."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from chromadb.errors import InternalError
from sqlalchemy import func, select

from Prod.als_trainer import publisher
from Prod.als_trainer.lock import TrainerLock, lock_holder
from Prod.als_trainer.service import rollback, run_training
from Prod.common import model_store
from Prod.common.als import ALSParams, fold_in_user
from Prod.common.db import session_scope
from Prod.common.models import Interaction, ModelVersion
from Prod.common.stores import chroma_for, redis_for
from tests.utils.publish import add_interactions, insert_dataset, train_and_publish


def registry_row(settings, version: str) -> ModelVersion | None:
    with session_scope(settings.database_url) as session:
        return session.get(ModelVersion, version)


def max_interaction_id(settings) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.max(Interaction.id)))


@pytest.fixture(scope="module")
def dataset(settings):
    return insert_dataset(settings, n_users=45, n_items=30, events_per_user=10, seed=3)


def test_run_publishes_a_model_that_readers_decode_consistently(settings, dataset):
    result = run_training(settings, force=True, evaluate=True)
    assert result.status == "active", result.error
    client, chroma = redis_for(settings), chroma_for(settings)
    assert model_store.active_version(client) == result.version_id

    row = registry_row(settings, result.version_id)
    assert row.status == "active" and row.activated_at is not None
    assert row.data_watermark == max_interaction_id(settings) == result.data_watermark
    assert row.n_users >= 45 and row.n_items >= 30 and row.n_interactions >= 450
    assert {
        "load",
        "index",
        "evaluate",
        "train",
        "publish_users",
        "publish_items",
        "verify",
        "switch",
    } <= set(row.durations)
    assert 0.0 <= row.metrics["ndcg@10"] <= 1.0 and row.metrics["eval_users"] > 0

    meta = model_store.read_meta(client, result.version_id)
    params = ALSParams.from_dict(json.loads(meta.extra["params"]))
    assert meta.dim == params.factors and meta.extra["data_watermark"] == str(row.data_watermark)
    item_ids, item_factors, metadatas = model_store.load_item_factors(chroma, meta)
    assert len(item_ids) == meta.n_items and set(dataset.item_ids) <= set(item_ids)
    first = metadatas[item_ids.index(dataset.item_ids[0])]
    assert "brand" not in first and first["category"] == "books"  # null brand omitted

    # the published user factor is the ALS solution for that user given the published items:
    # folding the user in from its interactions reproduces it (ids and rows line up)
    position = {item: j for j, item in enumerate(item_ids)}
    items_t = torch.from_numpy(item_factors)
    agree = []
    for user in dataset.user_ids[:10]:
        with session_scope(settings.database_url) as session:
            events = session.execute(
                select(Interaction.item_id, Interaction.weight).where(Interaction.user_id == user)
            ).all()
        idx = torch.tensor([position[i] for i, _ in events])
        weights = torch.tensor([w for _, w in events], dtype=torch.float32)
        folded = fold_in_user(items_t, idx, weights, params).numpy()
        stored = model_store.read_user_factor(client, meta, user)
        assert len(events) >= 10 and stored is not None
        agree.append(np.dot(folded, stored) / (np.linalg.norm(folded) * np.linalg.norm(stored)))
    assert min(agree) > 0.95, agree

    # and it learned the tastes: most users' top-5 unseen-or-not items are in their category
    in_taste = []
    for user in dataset.user_ids:
        scores = item_factors @ model_store.read_user_factor(client, meta, user)
        mine = [j for j in np.argsort(-scores) if item_ids[j] in dataset.item_category][:5]
        in_taste += [dataset.item_category[item_ids[j]] == dataset.taste[user] for j in mine]
    assert np.mean(in_taste) > 0.7


def test_finishing_the_holdout_fit_reaches_the_loss_of_a_cold_fit(settings, dataset):
    # with evaluation, the published model is the holdout fit plus a few warm iterations on all
    # the data; it must fit the data as well as a cold fit of the full length (eq. 3 loss)
    cold = run_training(settings, force=True, evaluate=False)
    warm = run_training(settings, force=True, evaluate=True)
    assert cold.status == warm.status == "active", (cold.error, warm.error)
    assert "evaluate" not in cold.durations and "evaluate" in warm.durations
    assert warm.metrics["final_loss"] <= cold.metrics["final_loss"] * 1.01


def test_failure_mid_publish_keeps_the_old_version_and_records_it(settings, dataset):
    old = train_and_publish(settings)
    client, chroma = redis_for(settings), chroma_for(settings)

    def explode(stage: str) -> None:
        if stage == "verify":  # users and items are written by now
            raise RuntimeError("injected failure before verify")

    result = run_training(settings, force=True, on_stage=explode)
    assert result.status == "failed" and "injected failure" in result.error
    assert model_store.active_version(client) == old
    assert result.version_id not in publisher.published_versions(client, chroma)
    row = registry_row(settings, result.version_id)
    assert row.status == "failed" and "injected failure before verify" in row.error
    assert "publish_items" in row.durations
    assert registry_row(settings, old).status == "active"


def test_a_chroma_error_after_the_switch_keeps_the_new_version_and_the_next_run_refills(
    settings, dataset, monkeypatch
):
    # Chroma is written after the switch (the engines load items from Redis): its failure leaves
    # the new version active with item_index "failed", and the next run fills it again
    old = train_and_publish(settings)
    client, chroma = redis_for(settings), chroma_for(settings)

    def refuse(*args, **kwargs):
        raise InternalError("injected chroma failure")

    with monkeypatch.context() as patch:
        patch.setattr(chroma, "create_collection", refuse)
        result = run_training(settings, force=True, evaluate=False)
    assert result.status == "active", result.error
    assert publisher.read_pointers(client) == publisher.Pointers(result.version_id, old)
    meta = model_store.read_meta(client, result.version_id)
    assert model_store.item_index_state(meta) == model_store.INDEX_FAILED
    assert meta.collection not in publisher.list_item_collections(chroma)
    assert registry_row(settings, result.version_id).status == "active"
    assert model_store.read_items(client, meta)[0]  # what the engines load is all there

    following = run_training(settings, force=True, evaluate=False)
    assert following.status == "active", following.error
    assert model_store.previous_version(client) == result.version_id
    meta = model_store.read_meta(client, result.version_id)
    assert model_store.item_index_state(meta) == model_store.INDEX_COMPLETE
    assert chroma.get_collection(meta.collection).count() == meta.n_items


def test_scheduled_run_skips_without_new_data_and_trains_when_data_arrives(settings, dataset):
    trained = train_and_publish(settings)
    skipped = run_training(settings, force=False)
    assert skipped.status == "skipped" and "watermark" in skipped.reason
    assert model_store.active_version(redis_for(settings)) == trained

    add_interactions(settings, dataset.user_ids[0], dataset.item_ids[:3])
    fresh = run_training(settings, force=False, evaluate=False)
    assert fresh.status == "active" and fresh.previous_version == trained
    assert fresh.data_watermark == max_interaction_id(settings)


def test_the_lock_lets_one_of_two_concurrent_runs_train(settings, dataset):
    inside, resume = threading.Event(), threading.Event()
    results = {}

    def hold_in_train(stage: str) -> None:
        if stage == "train":
            inside.set()
            assert resume.wait(60)

    first = threading.Thread(
        target=lambda: results.setdefault(
            "first", run_training(settings, force=True, evaluate=False, on_stage=hold_in_train)
        )
    )
    first.start()
    assert inside.wait(60)
    try:
        second = run_training(settings, force=True)
        assert second.status == "locked"
        assert second.version_id == lock_holder(redis_for(settings))
    finally:
        resume.set()
        first.join(60)
    assert results["first"].status == "active"
    assert second.version_id == results["first"].version_id
    assert lock_holder(redis_for(settings)) is None


def test_lock_release_is_token_checked_and_expires(settings):
    client = redis_for(settings)
    key = f"test:lock:{publisher.new_version_id()}"
    mine = TrainerLock(client, "a", ttl_s=30, key=key)
    theirs = TrainerLock(client, "b", ttl_s=30, key=key)
    assert mine.acquire() and not theirs.acquire()
    theirs.held = True  # even a confused holder cannot release someone else's lock
    assert theirs.release() is False and client.get(key) == b"a"
    assert mine.release() is True and client.get(key) is None
    expiring = TrainerLock(client, "c", ttl_s=30, key=key)
    assert expiring.acquire()
    assert 0 < client.pttl(key) <= 30_000  # a crashed trainer cannot block training forever
    expiring.release()


def test_lock_heartbeat_keeps_a_long_run_locked_and_a_dead_one_expires(settings):
    client = redis_for(settings)
    key = f"test:lock:{publisher.new_version_id()}"
    alive = TrainerLock(client, "alive", ttl_s=0.6, key=key)
    assert alive.acquire()
    time.sleep(2.0)  # > 3 TTLs: only the heartbeat keeps it
    assert client.get(key) == b"alive" and 0 < client.pttl(key) <= 600
    assert alive.release() is True and client.get(key) is None
    # a trainer that dies holding the lock (no heartbeat any more) frees it one TTL later
    dead = TrainerLock(client, "dead", ttl_s=0.3, key=key, heartbeat=False)
    assert dead.acquire()
    assert TrainerLock(client, "next", ttl_s=30, key=key).acquire() is False
    time.sleep(0.5)
    late = TrainerLock(client, "next", ttl_s=30, key=key)
    assert late.acquire() is True
    # the dead one's heartbeat-less renew fails, and it cannot release the new holder's lock
    assert dead.renew() is False and dead.release() is False and client.get(key) == b"next"
    late.release()


def test_cleanup_keeps_active_and_previous_and_rollback_is_mirrored(settings, dataset):
    client, chroma = redis_for(settings), chroma_for(settings)
    v1, v2, v3 = (train_and_publish(settings) for _ in range(3))
    assert publisher.published_versions(client, chroma) == {v2, v3}
    assert not client.exists(model_store.meta_key(v1))
    assert registry_row(settings, v1).status == "retired"

    answer = rollback(settings)
    assert (answer["active"], answer["previous"], answer["rolled_back_from"]) == (v2, v3, v3)
    assert registry_row(settings, v2).status == "active"
    assert registry_row(settings, v3).status == "rolled_back"
    with session_scope(settings.database_url) as session:
        actives = session.scalars(select(ModelVersion).where(ModelVersion.status == "active"))
        assert [r.version_id for r in actives] == [v2]
    # a scheduled run after a rollback does not retrain on the same data
    assert run_training(settings, force=False).status == "skipped"
