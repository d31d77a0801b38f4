"""What a user's client does against a started platform, checked the same way in local mode
(tests/e2e) and in Docker mode (tests/docker): the example clients' summaries, fold-in of a
trained user's new purchases, and a forced retrain picked up by the serving engine.

Each helper takes the platform's URLs and headers (Docker mode needs the API key), never a
platform object, so both launchers' ``Platform`` classes use it unchanged."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd


def wait_for(check, timeout_s: float, what: str, interval_s: float = 0.5):
    """``check()``'s first truthy value, polled until ``timeout_s``; else an AssertionError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{what} not within {timeout_s:.0f} s")


def get_json(url: str, headers: dict | None = None, **params) -> dict:
    response = httpx.get(url, headers=headers, params=params, timeout=30)
    assert response.status_code == 200, (url, response.status_code, response.text)
    return response.json()


def recommend(reco: str, user_id: str, headers: dict | None = None, k: int = 10) -> dict:
    return get_json(f"{reco}/api/v1/recommend/{user_id}", headers, k=k)


def check_als_example(summary: dict) -> None:
    """``main_example_als --json``: a new user gets popular items, then fold-in after their
    events (none of them recommended back), and similar items exclude the item itself."""
    assert summary["strategy_before"] == "popular"
    assert summary["strategy_after"] == "fold_in"
    assert summary["recommended"] and not set(summary["recommended"]) & set(summary["interacted"])
    assert summary["similar"] and summary["similar_to"] not in summary["similar"]


def check_chat_example(summary: dict) -> None:
    """``main_example_chat --json``: three turns in one session, products on the first, the
    session's history holding both sides of each turn."""
    assert len(summary["turns"]) == 3 and summary["turns"][0]["products"]
    assert summary["history_messages"] == 6


def check_fold_in_moves_a_trained_user(
    reco: str, dataset: Path, headers: dict | None = None
) -> None:
    """A trained user with a short history (3+ events) buys 5 popular items of the category
    least shown to them: served by fold-in at once, none of the bought items recommended back,
    and more of that category than before."""
    items = pd.read_csv(dataset / "items.csv", dtype={"item_id": str})
    events = pd.read_csv(dataset / "interactions.csv", dtype={"user_id": str, "item_id": str})
    category_of = dict(zip(items["item_id"], items["category"], strict=True))
    counts = events.groupby("user_id").size()
    user_id = str(counts[counts >= 3].sort_values().index[0])
    before = recommend(reco, user_id, headers)
    assert before["strategy"] == "als"
    shown = Counter(category_of[i["item_id"]] for i in before["items"])
    target = min(items["category"].unique(), key=lambda c: shown.get(c, 0))
    seen = set(events.loc[events["user_id"] == user_id, "item_id"])
    popular = events.loc[events["item_id"].map(category_of) == target, "item_id"].value_counts()
    picks = [i for i in popular.index if i not in seen][:5]
    batch = [{"user_id": user_id, "item_id": i, "event": "purchase"} for i in picks]
    response = httpx.post(
        f"{reco}/api/v1/interactions", json={"events": batch}, headers=headers, timeout=30
    )
    assert response.status_code == 201, response.text
    after = recommend(reco, user_id, headers)
    assert after["strategy"] == "fold_in"
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]
    assert not set(picks) & {i["item_id"] for i in after["items"]}
    moved = Counter(category_of[i["item_id"]] for i in after["items"])
    assert moved[target] > shown.get(target, 0), (target, shown, moved)


def force_retrain(reco: str, trainer: str, timeout_s: float, headers: dict | None = None) -> str:
    """POST a forced training run; the version the engine serves once it changed (a user the
    engine has never seen is served by that version too)."""
    old = get_json(f"{reco}/api/v1/status", headers).get("model_version")
    response = httpx.post(
        f"{trainer}/api/v1/train", json={"force": True}, headers=headers, timeout=30
    )
    assert response.status_code in (200, 202), response.text

    def new_version():
        version = get_json(f"{reco}/api/v1/status", headers).get("model_version")
        return version if version and version != old else None

    version = wait_for(new_version, timeout_s, "the engine serving a new model version")
    assert recommend(reco, "nobody-retrain", headers)["model_version"] == version
    return version
