"""Fixtures for the serving engine: a small clustered dataset in the shared Postgres, a model
trained and published on it by the real trainer, and the app running against the real stores."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient

from Prod.als_reco_engine.main import create_app
from tests.utils.publish import insert_dataset, train_and_publish


@pytest.fixture(scope="session")
def dataset(settings):
    """40 users x 30 items in three categories; every user prefers one category."""
    return insert_dataset(settings, n_users=40, n_items=30, events_per_user=8, seed=4)


@pytest.fixture(scope="session")
def published(settings, dataset) -> str:
    """Version id of a model trained by the real trainer on the data so far."""
    return train_and_publish(settings)


@pytest.fixture
def active(settings, published) -> str:
    """The version active now (tests that publish again move it on from ``published``)."""
    from Prod.common.model_store import active_version
    from Prod.common.stores import redis_for

    return active_version(redis_for(settings))


@pytest.fixture(scope="module")
def client(settings, published):
    """The app with its engine started (model loaded); the watcher polls every 0.2 s."""
    app = create_app(settings, poll_interval_s=0.2, popularity_interval_s=0.5)
    with TestClient(app) as test_client:
        yield test_client


def new_user_id(prefix: str = "new") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(check, timeout_s: float = 30.0, interval_s: float = 0.1):
    """Poll ``check()`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


class LiveServer:
    """The app under a real uvicorn on a loopback port, in a background thread."""

    def __init__(self, app, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        wait_for(lambda: self.server.started, timeout_s=30)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)
