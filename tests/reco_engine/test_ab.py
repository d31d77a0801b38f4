"""A/B tests of model versions against the real stores: stable disjoint buckets, responses named
by their arm's version, the report on generated traffic, and the trainer keeping arm B."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

import numpy as np
import pytest
from typer.testing import CliRunner

import config
from Prod.als_trainer import publisher
from Prod.batch.ab_report import ab_report, newcombe, wilson
from Prod.cli.main import app as cli
from Prod.common import experiment as ab
from Prod.common import model_store
from Prod.common.db import get_engine
from Prod.common.errors import Conflict, InvalidInput, NotFound
from Prod.common.stores import chroma_for, redis_for
from tests.reco_engine.conftest import new_user_id, wait_for
from tests.utils.publish import train_and_publish


@pytest.fixture(scope="module")
def two_versions(settings, published) -> tuple[str, str]:
    """(active, older): a second model trained on the same data, so both are published."""
    newer = train_and_publish(settings)
    assert newer != published
    return newer, published


@pytest.fixture
def experiment(settings, two_versions):
    """A running experiment: arm B is the older version, for 40% of the users."""
    client = redis_for(settings)
    started = ab.start_experiment(client, version_b=two_versions[1], share_b=0.4)
    yield started
    if ab.running_experiment(client) is not None:
        ab.stop_experiment(client)


def _serving(client, version_b: str) -> None:
    wait_for(
        lambda: (
            (client.get("/api/v1/status").json()["experiment"] or {}).get("version_b_loaded")
            and client.get("/api/v1/status").json()["experiment"]["version_b"] == version_b
        )
    )


def test_buckets_are_stable_disjoint_and_respect_the_share():
    running = ab.Experiment("exp-1", "v-b", 0.3, "2026-01-01T00:00:00+00:00")
    users = [f"user-{n}" for n in range(20_000)]
    arms = [ab.arm_of(running, u) for u in users]
    assert arms == [ab.arm_of(running, u) for u in users]  # stable
    assert set(arms) == {ab.ARM_A, ab.ARM_B}  # one arm each: disjoint by construction
    share = arms.count(ab.ARM_B) / len(users)
    assert abs(share - 0.3) < 0.015  # 20k draws: 3.5 standard deviations
    other = ab.Experiment("exp-2", "v-b", 0.3, "2026-01-01T00:00:00+00:00")
    moved = sum(ab.arm_of(other, u) != a for u, a in zip(users, arms, strict=True))
    assert moved > 0.3 * len(users)  # a new experiment id reshuffles (0.42 expected)


def test_start_refuses_what_cannot_be_served(settings, two_versions):
    client = redis_for(settings)
    active, older = two_versions
    with pytest.raises(NotFound, match="not published"):
        ab.start_experiment(client, version_b="20990101T000000.000Z-abcdef", share_b=0.5)
    with pytest.raises(InvalidInput, match="is the active one"):
        ab.start_experiment(client, version_b=active, share_b=0.5)
    for share in (0.0, 1.0, -0.1):
        with pytest.raises(InvalidInput, match="share_b"):
            ab.start_experiment(client, version_b=older, share_b=share)
    ab.start_experiment(client, version_b=older, share_b=0.5)
    try:
        with pytest.raises(Conflict, match="running"):
            ab.start_experiment(client, version_b=older, share_b=0.2)
    finally:
        ab.stop_experiment(client)
    with pytest.raises(NotFound):
        ab.stop_experiment(client)


def test_each_response_names_the_version_of_its_arm(
    client, settings, dataset, experiment, two_versions
):
    active, older = two_versions
    _serving(client, older)
    users = dataset.user_ids + [new_user_id("ab") for _ in range(20)]
    served = {}
    for user in users:
        body = client.get(f"/api/v1/recommend/{user}", params={"k": 5}).json()
        served[user] = body["model_version"]
        expected = older if ab.arm_of(experiment, user) == ab.ARM_B else active
        assert body["model_version"] == expected, (user, body["strategy"])
    assert set(served.values()) == {active, older}  # both arms served
    # the history logs the serving version of each response
    engine = client.app.state.engine
    assert engine.history.flush()
    user = next(u for u in dataset.user_ids if served[u] == older)
    history = client.get("/api/v1/history", params={"user_id": user, "limit": 1}).json()
    assert history["entries"][0]["model_version"] == older
    # stopped: everyone gets the active version again
    ab.stop_experiment(redis_for(settings))
    wait_for(lambda: client.get("/api/v1/status").json()["experiment"] is None)
    assert client.get(f"/api/v1/recommend/{user}").json()["model_version"] == active


def test_report_shows_the_arm_whose_users_click_more(
    client, settings, dataset, experiment, monkeypatch
):
    """Generated traffic: 300 new users get recommendations; users of arm B click (and some
    buy) a recommended item far more often than users of arm A."""
    _serving(client, experiment.version_b)
    since = datetime.now(timezone.utc)
    rng = np.random.default_rng(7)
    users = [new_user_id("abr") for _ in range(300)]
    events, truth = [], {ab.ARM_A: [], ab.ARM_B: []}
    for user in users:
        items = client.get(f"/api/v1/recommend/{user}", params={"k": 5}).json()["items"]
        arm = ab.arm_of(experiment, user)
        p_click = 0.6 if arm == ab.ARM_B else 0.2
        clicked = bool(rng.random() < p_click)
        truth[arm].append(clicked)
        if clicked:
            item = items[int(rng.integers(len(items)))]["item_id"]
            events.append({"user_id": user, "item_id": item, "event": "click"})
            if rng.random() < 0.5:
                events.append({"user_id": user, "item_id": item, "event": "purchase"})
        else:  # an interaction with an item that was not recommended does not count
            shown = {i["item_id"] for i in items}
            other = next(i for i in dataset.item_ids if i not in shown)
            events.append({"user_id": user, "item_id": other, "event": "purchase"})
    assert client.app.state.engine.history.flush()
    time.sleep(0.01)
    response = client.post("/api/v1/interactions", json={"events": events})
    assert response.status_code == 201, response.text

    report = ab_report(get_engine(settings.database_url), experiment, since=since)
    arms = report["arms"]
    for arm in (ab.ARM_A, ab.ARM_B):
        assert arms[arm]["users"] == len(truth[arm]) == arms[arm]["responses"]
        clicks = arms[arm]["click_rate"]
        assert clicks["users"] == sum(truth[arm])
        low, high = clicks["ci"]
        assert low <= clicks["rate"] <= high
        assert arms[arm]["other_version_responses"] == 0
    assert set(arms[ab.ARM_B]["served_versions"]) == {experiment.version_b}
    assert experiment.version_b not in arms[ab.ARM_A]["served_versions"]
    diff = report["b_minus_a"]["click_rate"]
    assert diff["significant"] and diff["ci"][0] > 0
    assert arms[ab.ARM_B]["purchase_rate"]["rate"] > 0

    # the CLI prints the same report
    monkeypatch.setattr(config, "get_settings", lambda: settings)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    result = CliRunner().invoke(cli, ["report", "ab", "--since", since.isoformat(), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["arms"][ab.ARM_B]["users"] >= arms[ab.ARM_B]["users"]
    readable = CliRunner().invoke(cli, ["report", "ab", "--since", since.isoformat()])
    assert readable.exit_code == 0 and "click_rate B - A" in readable.stdout
    bad = CliRunner().invoke(cli, ["report", "ab", "--since", "yesterday"])
    assert bad.exit_code == 1 and "neither an ISO-8601 time nor a duration" in bad.stderr


def test_intervals_match_known_values():
    """Wilson (1927) and Newcombe (1998) worked examples: 81/263 -> [0.2553, 0.3662];
    56/70 vs 48/80 -> difference 0.2, interval [0.0524, 0.3339] (Newcombe, table II)."""
    low, high = wilson(81, 263, 1.959964)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    diff, low, high = newcombe((48, 80), (56, 70), 1.959964)
    assert (round(diff, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)


def test_trainer_keeps_arm_b_while_the_experiment_runs(settings, experiment, two_versions):
    client, chroma = redis_for(settings), chroma_for(settings)
    third = train_and_publish(settings)  # active: third, previous: the second; B: the first
    assert experiment.version_b not in (third, two_versions[0])
    deleted = publisher.cleanup_versions(client, chroma, keep=2)
    assert experiment.version_b not in deleted
    assert client.exists(model_store.meta_key(experiment.version_b))
    assert model_store.item_collection_name(experiment.version_b) in (
        publisher.list_item_collections(chroma)
    )
    with pytest.raises(Conflict, match="arm B"):
        publisher.delete_version(client, chroma, experiment.version_b)
    ab.stop_experiment(client)
    assert ab.protected_versions(client) == set()
    doomed = publisher.versions_to_delete(
        publisher.published_versions(client, chroma), publisher.read_pointers(client), keep=2
    )
    assert experiment.version_b in doomed  # no longer protected
