"""Trainer faults with the real fault: the session's Postgres or Redis stopped, a trainer process
killed mid-publish; plus the idempotent rollback and the skipped non-forced run.

Stopping a shared session server is done by :func:`stopped`, which restarts it and waits until it
is healthy in a ``finally``, so later tests find it as they left it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from Prod.als_trainer import publisher
from Prod.als_trainer.lock import HEARTBEAT_TIMEOUT_S, LOCK_KEY, heartbeat_key, lock_holder
from Prod.als_trainer.main import create_app
from Prod.als_trainer.service import DEAD_RUN_ERROR
from Prod.common import model_store
from Prod.common.db import session_scope
from Prod.common.models import ModelVersion
from Prod.common.stores import redis_for
from tests.utils.publish import insert_dataset, train_and_publish
from tests.utils.trainer_process import start_trainer


@pytest.fixture(scope="module", autouse=True)
def data(settings):
    return insert_dataset(settings, n_users=30, n_items=20, seed=17)


@pytest.fixture
def app(settings):
    return create_app(settings, schedule=False)


@contextmanager
def stopped(infra, name: str) -> Iterator[None]:
    """Stop the session's ``postgres`` or ``redis``; restart it and wait until healthy after."""
    server = next(s for s in infra.servers if s.name == name)
    server.stop()
    try:
        yield
    finally:
        server.start(120)


def registry(settings) -> dict[str, str]:
    with session_scope(settings.database_url) as session:
        return dict(session.execute(select(ModelVersion.version_id, ModelVersion.status)).all())


def assert_store_error(response, store: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["store"] == store and store in error["message"].lower()


# --- item 4: rollback ------------------------------------------------------------------------


def test_rollback_during_postgres_outage_keeps_registry_and_pointer_consistent(
    app, settings, infra
):
    older, newer = train_and_publish(settings), train_and_publish(settings)
    client = redis_for(settings)
    before_rows = registry(settings)
    with TestClient(app) as http:
        with stopped(infra, "postgres"):
            for _ in range(2):  # a retry of the failed call must not flip anything either
                assert_store_error(http.post("/api/v1/rollback"), "postgres")
                assert publisher.read_pointers(client) == publisher.Pointers(newer, older)
        assert registry(settings) == before_rows
        assert before_rows[newer] == "active"

        done = http.post("/api/v1/rollback")
        assert done.status_code == 200, done.text
        assert done.json()["active"] == older and done.json()["rolled_back_from"] == newer
        retry = http.post("/api/v1/rollback")  # a client retrying after a lost answer
    assert retry.status_code == 200
    assert retry.json()["active"] == older and retry.json()["changed"] is False
    assert model_store.active_version(client) == older
    rows = registry(settings)
    assert (rows[older], rows[newer]) == ("active", "rolled_back")
    assert [v for v, s in rows.items() if s == "active"] == [older]


@pytest.mark.parametrize("store", ["postgres", "redis"])
def test_store_dying_mid_rollback_leaves_registry_and_pointer_as_they_were(
    app, settings, infra, monkeypatch, store
):
    """The store goes down between the registry write and the commit: postgres after the pointer
    compare-and-set (the commit fails; the pointers are put back), redis just before it."""
    older, newer = train_and_publish(settings), train_and_publish(settings)
    client = redis_for(settings)
    before_rows = registry(settings)
    real = publisher.set_pointers
    server = next(s for s in infra.servers if s.name == store)
    calls = []

    def dying(redis_client, expected, new):
        calls.append(new)
        if len(calls) == 1 and store == "redis":
            server.stop()
        real(redis_client, expected, new)
        if len(calls) == 1 and store == "postgres":
            server.stop()

    monkeypatch.setattr(publisher, "set_pointers", dying)
    try:
        with TestClient(app) as http:
            assert_store_error(http.post("/api/v1/rollback"), store)
    finally:
        server.start(120)
    assert len(calls) == (2 if store == "postgres" else 1)  # postgres: the pointers put back
    assert publisher.read_pointers(client) == publisher.Pointers(newer, older)
    assert registry(settings) == before_rows


def test_rollback_during_redis_outage_is_503_and_changes_nothing(app, settings, infra):
    older, newer = train_and_publish(settings), train_and_publish(settings)
    before_rows = registry(settings)
    with TestClient(app) as http, stopped(infra, "redis"):
        assert_store_error(http.post("/api/v1/rollback", json={"version": older}), "redis")
    assert registry(settings) == before_rows
    assert publisher.read_pointers(redis_for(settings)) == publisher.Pointers(newer, older)


def test_rollback_to_a_named_version_and_unknown_version_is_409(app, settings):
    older, newer = train_and_publish(settings), train_and_publish(settings)
    with TestClient(app) as http:
        named = http.post("/api/v1/rollback", json={"version": older})
        assert named.status_code == 200 and named.json()["active"] == older
        back = http.post("/api/v1/rollback", json={"version": newer})
        assert back.status_code == 200 and back.json()["active"] == newer
        unknown = http.post("/api/v1/rollback", json={"version": "20000101T000000.000Z-nosuch"})
    assert unknown.status_code == 409 and unknown.json()["error"]["type"] == "conflict"
    assert model_store.active_version(redis_for(settings)) == newer


# --- item 5 (trainer): 503 naming the store ----------------------------------------------------


@pytest.mark.parametrize("store", ["postgres", "redis"])
def test_trainer_endpoints_answer_503_naming_the_store_when_it_is_down(app, settings, infra, store):
    train_and_publish(settings)
    with TestClient(app, raise_server_exceptions=False) as http, stopped(infra, store):
        assert_store_error(http.get("/api/v1/status"), store)
        assert_store_error(http.post("/api/v1/train", json={"force": False}), store)
        assert_store_error(http.post("/api/v1/train"), store)
        assert_store_error(http.post("/api/v1/rollback"), store)
        assert app.state.runner.running() is None  # nothing half-started
    assert lock_holder(redis_for(settings)) is None


# --- item 7: a trainer killed mid-publish ------------------------------------------------------


def test_trainer_killed_mid_publish_is_marked_failed_and_not_reported_running(app, settings):
    train_and_publish(settings)
    version = publisher.new_version_id()
    proc = start_trainer(settings, "tests.trainer._doomed_trainer", version)
    try:
        assert proc.stdout.readline().strip() == "publishing"
    finally:
        proc.send_signal(signal.SIGKILL)  # killed mid-publish: no cleanup of any kind
        proc.wait(30)
    client = redis_for(settings)
    assert registry(settings)[version] == "training"
    assert lock_holder(client) == version and client.exists(model_store.user_factors_key(version))

    deadline = time.monotonic() + 30  # the heartbeat key outlives the last beat by a few seconds
    while client.exists(heartbeat_key()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.pttl(LOCK_KEY) > 30_000  # the lock alone would block for ~2 min

    with TestClient(app) as http:
        status = http.get("/api/v1/status").json()
        assert status["running"] is None
        assert status["last_run"]["version_id"] == version
        assert status["last_run"]["status"] == "failed"
        assert DEAD_RUN_ERROR in status["last_run"]["error"]
        assert not client.exists(model_store.user_factors_key(version))  # partial data removed

        ticket = http.post("/api/v1/train", json={"force": True, "evaluate": False})
        assert ticket.status_code == 202, ticket.text
        assert ticket.json()["already_running"] is False
        assert ticket.json()["version_id"] != version
        result = app.state.runner.wait(120)
    assert result.status == "active", result.error
    assert registry(settings)[version] == "failed"


def test_train_while_a_live_trainer_runs_reports_its_start_time(app, settings):
    from Prod.als_trainer.lock import TrainerLock
    from Prod.als_trainer.service import register_version

    version = publisher.new_version_id()
    lock = TrainerLock(redis_for(settings), version, ttl_s=60)
    assert lock.acquire()
    try:
        register_version(settings.database_url, version, 1, {})
        time.sleep(HEARTBEAT_TIMEOUT_S + 1)  # a live holder keeps beating
        with TestClient(app) as http:
            answer = http.post("/api/v1/train").json()
            status = http.get("/api/v1/status").json()
    finally:
        lock.release()
        with session_scope(settings.database_url) as session:
            session.delete(session.get(ModelVersion, version))
    assert answer["already_running"] is True and answer["version_id"] == version
    assert answer["started_at"] is not None
    assert status["running"]["version_id"] == version and status["running"]["started_at"]


# --- item 8: nothing new to train on -----------------------------------------------------------


def test_train_without_new_data_says_skipped_instead_of_a_phantom_run(app, settings):
    train_and_publish(settings)
    with session_scope(settings.database_url) as session:
        n_versions = session.scalar(select(func.count()).select_from(ModelVersion))
    with TestClient(app) as http:
        response = http.post("/api/v1/train", json={"force": False})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "skipped" and body["version_id"] is None
        assert body["already_running"] is False and app.state.runner.running() is None
        assert body["reason"] == (
            f"skipped: no new interactions since watermark {body['data_watermark']}"
        )
        documented = http.get("/openapi.json").json()["paths"]["/api/v1/train"]["post"]
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == n_versions
    examples = documented["responses"]["200"]["content"]["application/json"]["examples"]
    assert examples["skipped"]["value"]["status"] == "skipped"
    assert {"200", "202", "503"} <= set(documented["responses"])
