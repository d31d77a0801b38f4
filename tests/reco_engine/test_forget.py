"""Forgetting a person (issue 18.6): ``DELETE /api/v1/users/{user_id}`` and ``reco users forget``
leave nothing of theirs in Postgres (every table with a user id, chat messages through their
sessions), in Redis (any key) or in the engine's caches, and say what they removed."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

import config
from Prod.als_reco_engine.main import create_app
from Prod.als_trainer.lock import LOCK_KEY
from Prod.cli.main import app as cli
from Prod.common import model_store
from Prod.common.db import session_scope
from Prod.common.models import Base, ChatMessage, ChatSession
from Prod.common.stores import redis_for
from Prod.orchestrate.local_infra import free_port
from tests.utils.publish import add_interactions, insert_dataset, train_and_publish

# every table that holds a user id: a new one must be forgotten too (or listed here with why)
USER_TABLES = sorted(t.name for t in Base.metadata.sorted_tables if "user_id" in t.c)


@pytest.fixture(scope="module")
def people(settings, published):
    """This module's users, with factors in two stored model versions."""
    dataset = insert_dataset(settings, n_users=16, n_items=18, events_per_user=8, seed=66)
    versions = [train_and_publish(settings), train_and_publish(settings)]
    return dataset, versions


@pytest.fixture(scope="module")
def api(settings, people):
    with TestClient(create_app(settings, poll_interval_s=0.2, popularity_interval_s=0.5)) as client:
        yield client


def _rows_by_table(settings, user_id: str) -> dict[str, int]:
    """Rows of the user in every table with a user id, and their chat messages."""
    with session_scope(settings.database_url) as session:
        counts = {
            name: session.scalar(
                select(func.count())
                .select_from(Base.metadata.tables[name])
                .where(Base.metadata.tables[name].c.user_id == user_id)
            )
            for name in USER_TABLES
        }
        counts["chat_message"] = session.scalar(
            select(func.count())
            .select_from(ChatMessage)
            .join(ChatSession, ChatSession.session_id == ChatMessage.session_id)
            .where(ChatSession.user_id == user_id)
        )
    return counts


def _redis_keys_holding(settings, user_id: str) -> list[str]:
    """Every Redis key whose name, hash field, set member or string value names the user."""
    client = redis_for(settings)
    holding = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        name = key.decode()
        if user_id in name:
            holding.append(name)
        elif kind == b"hash" and client.hexists(key, user_id):
            holding.append(name)
        elif kind == b"set" and client.sismember(key, user_id):
            holding.append(name)
        elif kind == b"zset" and client.zscore(key, user_id) is not None:
            holding.append(name)
        elif kind == b"string" and user_id.encode() in (client.get(key) or b""):
            holding.append(name)
    return holding


def _chat(settings, user_id: str, messages: int) -> str:
    """A chat session of the user as the chat service stores it."""
    session_id = uuid.uuid4().hex
    with session_scope(settings.database_url) as session:
        session.add(ChatSession(session_id=session_id, user_id=user_id, filters={}))
        session.flush()
        for n in range(messages):
            role = "user" if n % 2 == 0 else "assistant"
            session.add(ChatMessage(session_id=session_id, role=role, content=f"message {n}"))
    return session_id


def _leave_traces(api, settings, user_id: str, item_ids: list[str]) -> None:
    """Everything the platform keeps about a shopper: history, list, suppression, events, a
    cached fold-in, chat."""
    assert api.get(f"/api/v1/recommend/{user_id}").status_code == 200
    assert api.post(f"/api/v1/lists/{user_id}", params={"k": 5}).status_code == 201
    listed = api.get(f"/api/v1/lists/{user_id}").json()["items"]
    removed = api.delete(f"/api/v1/lists/{user_id}/items", params={"item_id": listed[0]["item_id"]})
    assert removed.status_code == 200
    add_interactions(settings, user_id, item_ids[:2])
    engine = api.app.state.engine
    engine.forget_users([user_id])  # as POST /interactions does
    assert api.get(f"/api/v1/recommend/{user_id}").json()["strategy"] == "fold_in"
    _chat(settings, user_id, messages=3)
    assert engine.history.flush()


def test_forget_user_leaves_nothing_in_any_store(api, settings, people):
    dataset, versions = people
    user, other = dataset.user_ids[2], dataset.user_ids[3]
    _leave_traces(api, settings, user, dataset.item_ids)
    other_chat = _chat(settings, other, messages=2)
    engine = api.app.state.engine
    index = engine.holder.current
    before = _rows_by_table(settings, user)
    assert all(before[t] > 0 for t in before if t != "recommendation_list_item"), before
    assert before["recommendation_list_item"] == 4  # five listed, one removed (suppressed)
    client = redis_for(settings)
    held = [
        v
        for v in versions
        if client.hexists(model_store.user_factors_key(v), user)  # the trainer may drop old ones
    ]
    assert len(held) == 2 and engine.fold_ins.get(index.version, user) is not None
    other_before = _rows_by_table(settings, other)

    response = api.delete(f"/api/v1/users/{user}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["postgres"] == {
        "interactions": before["interaction"],
        "recommendations_served": before["recommendation_log"],
        "list_items": before["recommendation_list_item"],
        "suppressions": before["suppressed_item"],
        "chat_sessions": before["chat_session"],
        "chat_messages": before["chat_message"],
        "user": 1,
    }
    assert body["redis"]["user_factors"] >= 2 and set(held) <= set(body["redis"]["model_versions"])
    assert body["training_in_progress"] is False

    assert _rows_by_table(settings, user) == dict.fromkeys(before, 0)
    assert _redis_keys_holding(settings, user) == []
    assert engine.fold_ins.get(index.version, user) is None
    assert engine.profiles.cached(user) is None
    # nobody else's data went with it
    assert _rows_by_table(settings, other) == other_before
    with session_scope(settings.database_url) as session:
        assert session.get(ChatSession, other_chat) is not None
    again = api.delete(f"/api/v1/users/{user}")
    assert again.status_code == 404 and user in again.json()["error"]["message"]
    # the person is a stranger now: popular items
    assert api.get(f"/api/v1/recommend/{user}").json()["strategy"] == "popular"


def test_forget_with_redis_down_is_a_503_and_removes_nothing(settings, people):
    dataset, _ = people
    user = dataset.user_ids[5]
    before = _rows_by_table(settings, user)
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as client:
        response = client.delete(f"/api/v1/users/{user}")
    assert response.status_code == 503
    assert response.json()["error"]["store"] == "redis"
    assert _rows_by_table(settings, user) == before


def test_cli_forgets_a_user_and_prints_json(settings, people, monkeypatch):
    dataset, _ = people
    user = dataset.user_ids[6]
    _chat(settings, user, messages=2)
    interactions = _rows_by_table(settings, user)["interaction"]
    monkeypatch.setattr(config, "get_settings", lambda: settings)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))

    # a training run holds its lock meanwhile: it may publish the user's factor again
    redis_for(settings).set(LOCK_KEY, "a-running-trainer", px=30_000)
    try:
        result = CliRunner().invoke(cli, ["users", "forget", user, "--json"])
    finally:
        redis_for(settings).delete(LOCK_KEY)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["training_in_progress"] is True
    assert report["postgres"]["interactions"] == interactions > 0
    assert report["postgres"]["chat_messages"] == 2 and report["redis"]["user_factors"] >= 1
    assert not any(_rows_by_table(settings, user).values())
    assert _redis_keys_holding(settings, user) == []

    unknown = CliRunner().invoke(cli, ["users", "forget", user])
    assert unknown.exit_code == 1
    assert f"no data of user '{user}' in any store" in unknown.stderr
    invalid = CliRunner().invoke(cli, ["users", "forget", "not an id"])
    assert invalid.exit_code == 1 and "not a valid id" in invalid.stderr
