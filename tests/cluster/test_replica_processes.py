"""Two serving replicas as real processes (``python -m Prod.als_reco_engine.main``) on the same
stores, Redis being the 3-master cluster: a user's new interactions posted to one replica shape
the other's next answer, and a new model version reaches both within their 1 s pointer poll."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from Prod.bench.servers import start_server, stop_server
from Prod.common.hub import OFFLINE_ENV
from Prod.orchestrate.local_infra import free_port
from tests.reco_engine.conftest import new_user_id, wait_for
from tests.utils.publish import train_and_publish

REPLICAS = 2
POLL_S = 1.0  # the engine's pointer poll in a served process (Prod.als_reco_engine.main)


def _env(settings, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ENVIRONMENT": "test",
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "CHROMA_HOST": settings.chroma_host,
            "CHROMA_PORT": str(settings.chroma_port),
            "PRODUCTS_COLLECTION": settings.products_collection,
            "RECO_PORT": str(port),
            "RECO_WORKERS": "1",
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "API_KEY": "",
            "OMP_NUM_THREADS": "1",
            **OFFLINE_ENV,
        }
    )
    return env


@pytest.fixture(scope="module")
def replicas(cluster_settings, cluster_published, tmp_path_factory):
    """Base URLs of the running replicas, each serving the active model."""
    logs = tmp_path_factory.mktemp("replicas")
    procs, urls = [], []
    try:
        for n in range(REPLICAS):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            procs.append(
                start_server(
                    "Prod.als_reco_engine.main",
                    _env(cluster_settings, port),
                    f"{url}/api/v1/status",
                    lambda body: body.get("active_version") is not None,
                    logs / f"replica{n}.log",
                    timeout_s=180,
                )
            )
            urls.append(url)
        yield urls
    finally:
        for proc in procs:
            stop_server(proc)


def _recommend(url: str, user: str, **params) -> dict:
    response = httpx.get(f"{url}/api/v1/recommend/{user}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_interactions_posted_to_one_replica_shape_the_others_next_answer(replicas, cluster_dataset):
    first, second = replicas
    user = new_user_id("procs")
    garden = [i for i in cluster_dataset.item_ids if cluster_dataset.item_category[i] == "garden"]
    # both replicas serve, and cache, the stranger's empty profile
    assert _recommend(first, user)["strategy"] == "popular"
    assert _recommend(second, user)["strategy"] == "popular"

    events = [{"user_id": user, "item_id": i, "event": "purchase"} for i in garden[:4]]
    posted = httpx.post(f"{first}/api/v1/interactions", json={"events": events}, timeout=10)
    assert posted.status_code == 201, posted.text
    sent = time.monotonic()
    # the invalidation crosses processes over the cluster's pub/sub within milliseconds; the
    # 60 s profile cache would otherwise answer "popular" for a minute
    body = wait_for(
        lambda: (b := _recommend(second, user, k=5))["strategy"] == "fold_in" and b,
        timeout_s=5,
        interval_s=0.05,
    )
    print(f"fold-in on the other replica {time.monotonic() - sent:.3f} s after the write")
    assert not {i["item_id"] for i in body["items"]} & set(garden[:4])  # seen items left out


def test_a_new_version_reaches_every_replica_within_the_poll(replicas, cluster_settings):
    version = train_and_publish(cluster_settings)
    switched = time.monotonic()

    def serving_everywhere() -> bool:
        statuses = [httpx.get(f"{url}/api/v1/status", timeout=5).json() for url in replicas]
        return all(s["active_version"] == s["model_version"] == version for s in statuses)

    # the pointer poll (1 s) plus loading the small index; a few seconds on a busy 2-core box
    wait_for(serving_everywhere, timeout_s=30, interval_s=0.1)
    lag = time.monotonic() - switched
    print(f"new version served by {REPLICAS} replicas {lag:.2f} s after the switch")
    for url in replicas:
        assert _recommend(url, new_user_id("v"))["model_version"] == version
