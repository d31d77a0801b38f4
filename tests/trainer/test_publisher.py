"""Publishing with known (random) factors: versioned keys + collection, atomic switch, rollback,
cleanup - read back through the readers' own functions in Prod.common.model_store."""

from __future__ import annotations

import numpy as np
import pytest
from chromadb.errors import ChromaError

from Prod.als_trainer import publisher
from Prod.als_trainer.service import mirror_pointers, publish_and_activate, rollback
from Prod.common import model_store
from Prod.common.db import session_scope
from Prod.common.errors import Conflict
from Prod.common.models import ModelVersion
from Prod.common.stores import chroma_for, redis_for


def random_model(rng, n_users=25, n_items=12, dim=8, tag="p"):
    version = publisher.new_version_id()
    factors = publisher.FactorSet(
        user_ids=[f"{tag}{version}-u{i}" for i in range(n_users)],
        user_factors=rng.standard_normal((n_users, dim)).astype(np.float32),
        item_ids=[f"{tag}{version}-i{j}" for j in range(n_items)],
        item_factors=rng.standard_normal((n_items, dim)).astype(np.float32),
        item_metadata=[
            {"title": f"item {j}", "price": float(j)} if j % 2 else {"title": "x"}
            for j in range(n_items)
        ],
    )
    meta = model_store.ModelMeta(
        version=version,
        dim=dim,
        n_users=n_users,
        n_items=n_items,
        collection=model_store.item_collection_name(version),
        alpha=2.0,
        regularization=0.1,
        trained_at="2024-01-01T00:00:00+00:00",
    )
    return meta, factors


def test_version_ids_sort_by_time_and_are_valid_collection_names():
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2024, 5, 1, 12, 0, 0, 5000, tzinfo=timezone.utc)
    ids = [publisher.new_version_id(t0 + timedelta(milliseconds=ms)) for ms in (0, 1, 999, 60000)]
    assert ids == sorted(ids)
    assert len(set(publisher.new_version_id(t0) for _ in range(20))) == 20  # random suffix
    for version in ids:
        assert model_store.item_collection_name(version) == f"als-items-{version}"


def test_publish_then_switch_is_read_back_exactly_by_model_store(settings, rng):
    client, chroma = redis_for(settings), chroma_for(settings)
    meta, factors = random_model(rng)
    old_active = model_store.active_version(client)

    publisher.publish_version(client, chroma, meta, factors)
    # complete but not yet visible: the active pointer did not move
    assert model_store.active_version(client) == old_active
    before = publisher.switch_active(client, meta.version)
    assert before.active == old_active
    assert model_store.active_version(client) == meta.version
    if old_active:
        assert model_store.previous_version(client) == old_active

    read = model_store.read_meta(client, model_store.active_version(client))
    assert (read.dim, read.n_users, read.n_items) == (8, 25, 12)
    for i in (0, 7, 24):
        got = model_store.read_user_factor(client, read, factors.user_ids[i])
        np.testing.assert_array_equal(got, factors.user_factors[i])
    # what the engines load: the Redis items hash, in publish order; Chroma is filled after
    ids, matrix, _ = model_store.load_items(client, read, lambda: None)
    assert ids == factors.item_ids and np.array_equal(matrix, factors.item_factors)
    assert model_store.item_index_state(read) == model_store.INDEX_FILLING
    assert publisher.fill_item_index(client, chroma, meta.version) == 12
    read = model_store.read_meta(client, meta.version)
    assert model_store.item_index_state(read) == model_store.INDEX_COMPLETE
    ids, matrix, metadatas = model_store.load_item_factors(chroma, read, page_size=5)
    order = [factors.item_ids.index(item) for item in ids]
    assert sorted(order) == list(range(12))
    np.testing.assert_allclose(matrix, factors.item_factors[order], rtol=1e-6)
    by_id = dict(zip(ids, metadatas, strict=True))
    assert by_id[factors.item_ids[3]] == {"title": "item 3", "price": 3.0}
    collection = chroma.get_collection(read.collection)
    assert collection.metadata["hnsw:space"] == "ip"


def test_items_written_in_concurrent_batches_arrive_complete(settings, rng, monkeypatch):
    chroma = chroma_for(settings)
    monkeypatch.setattr(chroma, "get_max_batch_size", lambda: 4)  # 40 items -> 10 batches
    meta, factors = random_model(rng, n_items=40, tag="b")
    written = []
    collection = publisher.write_item_factors(
        chroma,
        meta.version,
        factors.item_ids,
        factors.item_factors,
        factors.item_metadata,
        progress=written.append,
    )
    try:
        assert written == [4] * 10
        publisher.verify_item_factors(collection, factors.item_ids, factors.item_factors, 40)
    finally:
        chroma.delete_collection(collection.name)


def test_a_failed_item_batch_fails_the_write(settings, rng, monkeypatch):
    chroma = chroma_for(settings)
    monkeypatch.setattr(chroma, "get_max_batch_size", lambda: 4)
    meta, factors = random_model(rng, n_items=20, tag="f")
    bad = factors.item_factors.copy()
    bad[13] = np.nan  # Chroma refuses the batch holding it
    with pytest.raises(ChromaError, match="Non-finite"):
        publisher.write_item_factors(
            chroma, meta.version, factors.item_ids, bad, factors.item_metadata
        )
    chroma.delete_collection(model_store.item_collection_name(meta.version))


def test_rollback_swaps_pointers_and_refuses_without_previous(settings, rng):
    client = redis_for(settings)
    first, f1 = random_model(rng)
    second, f2 = random_model(rng)
    publish_and_activate(settings, first, f1)
    publish_and_activate(settings, second, f2)
    assert publisher.read_pointers(client) == publisher.Pointers(second.version, first.version)

    register(settings, first.version, second.version)

    answer = rollback(settings)
    assert (answer["active"], answer["previous"]) == (first.version, second.version)
    assert answer["changed"] and answer["rolled_back_from"] == second.version
    assert model_store.active_version(client) == first.version
    # not a toggle: the same request again changes nothing and says so
    again = rollback(settings)
    assert (again["active"], again["changed"]) == (first.version, False)
    assert model_store.active_version(client) == first.version
    # going back to the rolled-back version needs it named
    forward = rollback(settings, second.version)
    assert (forward["active"], forward["previous"]) == (second.version, first.version)

    client.delete(model_store.PREVIOUS_KEY)
    with pytest.raises(Conflict, match="no previous"):
        rollback(settings)
    assert model_store.active_version(client) == second.version
    with pytest.raises(Conflict, match="not a published model version"):
        rollback(settings, "20000101T000000.000Z-nosuch")


def register(settings, *versions: str) -> None:
    """Registry rows for versions published without the trainer (as a run would leave them)."""
    with session_scope(settings.database_url) as session:
        for version in versions:
            session.add(ModelVersion(version_id=version, status="retired"))
    mirror_pointers(settings.database_url, publisher.read_pointers(redis_for(settings)))


def test_cleanup_keeps_active_previous_and_refuses_to_delete_them(settings, rng):
    client, chroma = redis_for(settings), chroma_for(settings)
    versions = []
    for _ in range(4):
        meta, factors = random_model(rng, n_users=5, n_items=4)
        publish_and_activate(settings, meta, factors)
        versions.append(meta.version)
    deleted = publisher.cleanup_versions(client, chroma, keep=2)
    assert set(versions[:2]) <= set(deleted)
    remaining = publisher.published_versions(client, chroma)
    assert set(versions[2:]) <= remaining and not set(versions[:2]) & remaining
    assert remaining == set(versions[2:])  # nothing else survives either
    assert not client.exists(model_store.user_factors_key(versions[0]))
    with pytest.raises(Conflict):
        publisher.delete_version(client, chroma, versions[3])


def test_verify_refuses_an_incomplete_collection(settings, rng):
    chroma = chroma_for(settings)
    meta, factors = random_model(rng, n_users=2, n_items=6)
    collection = publisher.write_item_factors(
        chroma,
        meta.version,
        factors.item_ids[:5],
        factors.item_factors[:5],
        factors.item_metadata[:5],
    )
    try:
        with pytest.raises(Exception, match="holds 5 items, expected 6"):
            publisher.verify_item_factors(collection, factors.item_ids, factors.item_factors)
    finally:
        chroma.delete_collection(collection.name)
