"""Hot swap under load, store outages, no model, API key, and a schemathesis run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from Prod.als_reco_engine.main import create_app
from Prod.orchestrate.local_infra import ChromaServer, RedisServer, free_port
from tests.reco_engine.conftest import LiveServer, new_user_id, wait_for
from tests.utils.faults import store_down
from tests.utils.publish import train_and_publish


def test_hot_swap_while_requests_run_has_no_errors(settings, dataset, published):
    app = create_app(settings, poll_interval_s=0.2)
    users = dataset.user_ids[:10]
    with LiveServer(app, free_port()) as server, server.client() as http:
        before = http.get("/api/v1/status").json()["model_version"]
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer() -> None:
            with server.client() as own:
                n = 0
                while not stop.is_set():
                    response = own.get(f"/api/v1/recommend/{users[n % len(users)]}")
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        versions.add(response.json()["model_version"])
                    n += 1

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            new_version = train_and_publish(settings)
            wait_for(lambda: http.get("/api/v1/status").json()["model_version"] == new_version)
            wait_for(lambda: new_version in versions)
        finally:
            stop.set()
            worker.join(timeout=30)
    assert new_version != before
    assert statuses and set(statuses) == {200}
    assert {before, new_version} <= versions


@pytest.fixture
def private_stores(settings, tmp_path):
    """A Redis and a Chroma of this test's own (Postgres shared), so they can be stopped."""
    redis_server = RedisServer("redis", Path(tmp_path), free_port())
    chroma_server = ChromaServer("chroma", Path(tmp_path), free_port())
    redis_server.start(60)
    chroma_server.start(120)
    own = settings.model_copy(
        update={"redis_url": redis_server.url, "chroma_port": chroma_server.port}
    )
    try:
        yield own, redis_server, chroma_server
    finally:
        chroma_server.stop()
        redis_server.stop()


def test_store_outages_never_cause_a_5xx(private_stores, dataset, published):
    own, redis_server, chroma_server = private_stores
    version = train_and_publish(own)
    trained_user = dataset.user_ids[3]
    with TestClient(create_app(own, poll_interval_s=0.2)) as client:
        assert client.get(f"/api/v1/recommend/{trained_user}").json()["strategy"] == "als"

        chroma_server.stop()  # the index is in memory: serving goes on
        body = client.get(f"/api/v1/recommend/{trained_user}").json()
        assert body["strategy"] == "als" and body["model_version"] == version
        assert client.get(f"/api/v1/similar/{dataset.item_ids[0]}").status_code == 200

        redis_server.stop()  # no user factors: fold-in from Postgres, or popularity
        with_history = client.get(f"/api/v1/recommend/{trained_user}")
        assert with_history.status_code == 200 and with_history.json()["strategy"] == "fold_in"
        assert with_history.json()["items"]
        cold = client.get(f"/api/v1/recommend/{new_user_id('cold')}")
        assert cold.status_code == 200 and cold.json()["strategy"] == "popular"
        status = client.get("/api/v1/status").json()
        assert status["status"] == "degraded" and status["strategies"]["als"] is False
        assert status["model_version"] == version  # still serving the loaded index


def test_history_is_not_dropped_while_postgres_is_down(settings, infra, dataset, published):
    """Issue 13.3: rows served during an outage are held (bounded), counted, and written after."""
    own = settings.model_copy(update={"history_max_buffered": 5})
    user = dataset.user_ids[5]
    with TestClient(create_app(own, poll_interval_s=0.2)) as client:
        engine = client.app.state.engine
        assert client.get(f"/api/v1/recommend/{user}").status_code == 200  # profile cached
        before = client.get("/api/v1/history", params={"user_id": user}).json()["total"]
        with store_down(infra, "postgres"):
            for _ in range(8):  # the cached profile serves without Postgres
                assert client.get(f"/api/v1/recommend/{user}").status_code == 200
            engine.history.flush()  # one failed attempt: the rows stay queued
            status = client.get("/api/v1/status")
            assert status.status_code == 200, status.text
            body = status.json()
            assert body["status"] == "degraded" and body["stores"]["postgres"] is False
            assert body["history"]["buffered"] == 5 and body["history"]["dropped"] == 3
            metrics = client.get("/metrics").text
            assert "reco_history_rows_buffered 5.0" in metrics
            assert "reco_history_rows_dropped_total 3.0" in metrics
        wait_for(lambda: client.get("/api/v1/status").json()["history"]["buffered"] == 0)
        body = client.get("/api/v1/status").json()
        assert body["status"] == "ok" and body["stores"]["postgres"] is True
        assert body["history"]["flushed"] == 5 and body["history"]["dropped"] == 3
        assert "reco_history_rows_flushed_total 5.0" in client.get("/metrics").text
        after = client.get("/api/v1/history", params={"user_id": user}).json()["total"]
        assert after == before + 5


def test_lists_with_postgres_down_are_503_naming_postgres(settings, infra, dataset, published):
    """Issue 13.5: stored lists and history were a 500 during a Postgres outage."""
    user, item = new_user_id("lists-pg"), dataset.item_ids[0]
    with TestClient(create_app(settings)) as client, store_down(infra, "postgres"):
        for response in (
            client.get(f"/api/v1/lists/{user}"),
            client.post(f"/api/v1/lists/{user}"),
            client.put(f"/api/v1/lists/{user}", json={"item_ids": [item]}),
            client.delete(f"/api/v1/lists/{user}/items", params={"item_id": item}),
            client.delete(f"/api/v1/lists/{user}"),
            client.delete(f"/api/v1/lists/{user}/suppressions", params={"item_id": item}),
            client.get("/api/v1/history", params={"user_id": user}),
        ):
            assert response.status_code == 503, (response.request.method, response.text)
            error = response.json()["error"]
            assert error["store"] == "postgres" and "PostgreSQL" in error["message"]


def test_status_checks_postgres_and_is_503_when_nothing_can_serve(
    settings, infra, dataset, published
):
    """Issue 13.6: /status said ok through a Postgres outage and never answered 503."""
    dead_redis = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}  # nothing listens there
    )
    with (
        TestClient(create_app(settings)) as client,
        TestClient(create_app(dead_redis)) as unpublished,
    ):
        assert client.get("/api/v1/status").json()["stores"] == {"redis": True, "postgres": True}
        with store_down(infra, "postgres"):
            status = client.get("/api/v1/status")
            assert status.status_code == 200  # degraded: ALS users still served
            body = status.json()
            assert body["status"] == "degraded" and body["stores"]["postgres"] is False
            assert body["strategies"] == {"als": True, "fold_in": False, "popular": False}
            down = unpublished.get("/api/v1/status")  # no model, no Postgres: nothing to serve
            assert down.status_code == 503, down.text
            assert down.json()["strategies"] == {"als": False, "fold_in": False, "popular": False}
        assert client.get("/api/v1/status").json()["status"] == "ok"


def test_no_model_published_serves_popularity_and_status_says_so(settings, dataset):
    # a Redis database nobody published into: same server, other db number
    empty = settings.model_copy(update={"redis_url": settings.redis_url.rsplit("/", 1)[0] + "/7"})
    with TestClient(create_app(empty)) as client:
        body = client.get(
            f"/api/v1/recommend/{dataset.user_ids[0]}", params={"category": "audio"}
        ).json()
        assert body["strategy"] == "popular" and body["model_version"] is None
        assert body["items"] and {i["category"] for i in body["items"]} == {"audio"}
        status = client.get("/api/v1/status").json()
        assert status["status"] == "no_model" and status["model_version"] is None
        assert status["strategies"] == {"als": False, "fold_in": False, "popular": True}
        similar = client.get(f"/api/v1/similar/{dataset.item_ids[0]}")
        assert similar.status_code == 503 and similar.json()["error"]["type"] == "model_not_ready"


def test_api_key_is_required_everywhere_but_health(settings, dataset, published):
    keyed = settings.model_copy(update={"api_key": "s3cret-key"})
    with TestClient(create_app(keyed)) as client:
        assert client.get("/health").status_code == 200
        for path in (
            "/api/v1/status",
            f"/api/v1/recommend/{dataset.user_ids[0]}",
            f"/api/v1/similar/{dataset.item_ids[0]}",
            "/api/v1/history",
            "/metrics",
        ):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": "wrong"}).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": "s3cret-key"}).status_code == 200, path
        assert client.post("/api/v1/interactions", json={}).status_code == 401


def _fuzz(operation, failures: list) -> None:
    """Up to 15 generated requests for one operation; remember every 5xx."""

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        response = case.call()
        if response.status_code >= 500:
            failures.append((operation.label, response.status_code, response.text[:300]))

    run()


def test_schemathesis_finds_no_server_errors(settings, dataset, published):
    app = create_app(settings)
    with TestClient(app):  # lifespan started: the engine is loaded for schemathesis' calls
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        failures: list = []
        for operation in operations:
            _fuzz(operation, failures)
    assert len(operations) >= 10
    assert not failures, failures[:5]
