"""The local servers are real and reachable, and the schema migrates idempotently."""

from __future__ import annotations

from sqlalchemy import text

from Prod.common.db import get_engine, migrate
from Prod.common.stores import chroma_for, redis_for


def test_servers_are_healthy(infra):
    status = infra.status()
    assert set(status) == {"postgres", "redis", "chroma"}
    assert all(row["healthy"] and row["pid"] for row in status.values()), status


def test_postgres_is_real_postgres_16(settings):
    with get_engine(settings.database_url).connect() as conn:
        version = conn.execute(text("show server_version")).scalar_one()
    assert version.startswith("16")


def test_migrate_is_idempotent(settings):
    assert migrate(settings.database_url) == migrate(settings.database_url)
    with get_engine(settings.database_url).connect() as conn:
        count = conn.execute(text("select count(*) from schema_migration")).scalar_one()
    assert count == 1


def test_redis_and_chroma_round_trip(settings):
    r = redis_for(settings)
    r.set("test:infra", b"\x00\x01")
    assert r.get("test:infra") == b"\x00\x01"
    client = chroma_for(settings)
    collection = client.get_or_create_collection("test-infra", metadata={"hnsw:space": "ip"})
    collection.upsert(ids=["a"], embeddings=[[1.0, 0.0]], metadatas=[{"brand": "x"}])
    assert collection.get(ids=["a"])["metadatas"][0]["brand"] == "x"
    client.delete_collection("test-infra")
