"""End to end: `bash start_services.sh` in local mode on a temporary data folder and free ports.

One platform starts for the module (small generated store, no Ollama, no cross-encoder), then:
both example clients succeed against it; new interactions change a user's recommendations through
fold-in; a forced retrain publishes a new version the serving engine picks up without a restart;
`down` leaves no process behind. Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest

from Prod.orchestrate.local_infra import port_open
from tests.e2e.platform import Platform, last_json, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

WAIT_S = 240


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def platform():
    with running_platform() as started:  # a small generated store
        yield started


def test_up_starts_every_service_and_publishes_a_model(platform):
    result = platform.first_up
    assert result["mode"] == "local"
    assert {name: row["state"] for name, row in result["services"].items()} == {
        "als_trainer": "up",
        "als_reco_engine": "up",
        "chat_reco_engine": "up",
        "web": "up",
    }
    assert all(row["healthy"] for row in result["infra"].values())
    assert result["model_version"], "the trainer published no first model"
    assert set(result["data"]["ingested"]) == {"postgres", "chroma"}
    assert result["ollama"]["reachable"] is False
    for name, row in result["services"].items():
        assert httpx.get(f"{row['url']}/health", timeout=5).is_success, name


_LOG_LINE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|DEBUG) \[%s\] [\w.]+: \S"


def test_start_up_logs_say_what_loaded_and_nothing_alarming(platform):
    """Each service's log, read as a user reads it after `up`: formatted lines only (no
    warnings, tracebacks or library output), one per step, ending with what is served."""
    chat_ready = _wait_for(
        lambda: re.search(r"ready: (\d+) products", platform.log("chat_reco_engine")),
        WAIT_S,
        "the chat's ready line",
    )
    assert int(chat_ready.group(1)) == 400  # the generated catalogue
    for service in ("als_trainer", "als_reco_engine", "chat_reco_engine"):
        lines = platform.log(service).splitlines()
        noise = [line for line in lines if not re.match(_LOG_LINE % service, line)]
        assert lines and not noise, f"{service}:\n" + "\n".join(noise)
        assert not any("Waiting for application startup" in line for line in lines)
        assert not any("GET /health" in line for line in lines)  # the launcher's probes
        assert not any("apscheduler" in line for line in lines), service
    reco = platform.log("als_reco_engine")
    # "ready: model none yet (...)" when it starts before the trainer's first model is out
    assert re.search(r"ready: model .+, \d+ items; strategies [a-z_, ]+", reco), reco
    assert platform.first_up["model_version"] in reco  # the model it went on to serve
    assert "Warning" not in platform.up_output and "Traceback" not in platform.up_output


def test_up_again_is_safe_and_keeps_the_same_processes(platform):
    again = last_json(platform.launcher("--local", "up", "--json"))
    assert set(again["started"].values()) == {"running"}
    assert again["data"]["ingested"] == []
    before = {name: row["pid"] for name, row in platform.first_up["services"].items()}
    assert {name: row["pid"] for name, row in again["services"].items()} == before


def test_status_reports_services_ports_and_model_version(platform):
    status = last_json(platform.launcher("--local", "status", "--json"))
    assert status["services"]["als_reco_engine"]["port"] == platform.ports["reco"]
    assert status["services"]["chat_reco_engine"]["state"] == "up"
    assert status["model_version"] == platform.first_up["model_version"]


def test_als_example_client_succeeds(platform):
    summary = last_json(
        platform.example("Prod.examples.main_example_als", "--reco-url", platform.reco, "--json")
    )
    assert summary["strategy_before"] == "popular"
    assert summary["strategy_after"] == "fold_in"
    assert summary["recommended"] and not set(summary["recommended"]) & set(summary["interacted"])
    assert summary["similar"] and summary["similar_to"] not in summary["similar"]
    assert summary["history_entries"] >= 2
    # it forgot its user at the end: no events, no served history left
    assert summary["forgotten"]["interactions"] >= len(summary["interacted"]), summary
    assert summary["forgotten"]["recommendations_served"] >= 2
    left = httpx.get(
        f"{platform.reco}/api/v1/history", params={"user_id": summary["user_id"]}, timeout=30
    )
    assert left.status_code == 200 and left.json()["total"] == 0, left.text


def test_chat_example_client_succeeds(platform):
    summary = last_json(
        platform.example("Prod.examples.main_example_chat", "--chat-url", platform.chat, "--json")
    )
    assert len(summary["turns"]) == 3 and summary["turns"][0]["products"]
    # the price limit of the first turn is carried into the follow-ups ("cheaper" lowers it)
    limits = [turn["filters"].get("max_price") for turn in summary["turns"]]
    assert limits[0] == limits[1] == 100 and limits[2] is not None and limits[2] < 100, limits
    assert summary["turns"][1]["filters"].get("min_rating") == 4
    assert {turn["generated_by"] for turn in summary["turns"]} == {"fallback"}
    assert summary["history_messages"] == 6
    # it deleted its session at the end: nothing of it is left in the live data
    assert summary["deleted_messages"] == 6
    history = httpx.get(f"{platform.chat}/api/v1/chat/{summary['session_id']}/history", timeout=30)
    assert history.status_code == 404, history.text


def _recommend(platform: Platform, user_id: str, k: int = 10) -> dict:
    response = httpx.get(f"{platform.reco}/api/v1/recommend/{user_id}", params={"k": k}, timeout=30)
    response.raise_for_status()
    return response.json()


def test_new_interactions_change_a_trained_user_s_recommendations_via_fold_in(platform):
    items = pd.read_csv(platform.dataset / "items.csv", dtype={"item_id": str})
    events = pd.read_csv(
        platform.dataset / "interactions.csv", dtype={"user_id": str, "item_id": str}
    )
    category_of = dict(zip(items["item_id"], items["category"], strict=True))
    # a trained user with a short history, so a few new purchases visibly move their taste
    counts = events.groupby("user_id").size()
    user_id = str(counts[counts >= 3].sort_values().index[0])
    before = _recommend(platform, user_id)
    assert before["strategy"] == "als"
    shown = Counter(category_of[i["item_id"]] for i in before["items"])
    target = min(items["category"].unique(), key=lambda c: shown.get(c, 0))
    seen = set(events.loc[events["user_id"] == user_id, "item_id"])
    popular = events.loc[events["item_id"].map(category_of) == target, "item_id"].value_counts()
    picks = [i for i in popular.index if i not in seen][:5]
    batch = [{"user_id": user_id, "item_id": i, "event": "purchase"} for i in picks]
    response = httpx.post(
        f"{platform.reco}/api/v1/interactions", json={"events": batch}, timeout=30
    )
    assert response.status_code == 201, response.text

    after = _recommend(platform, user_id)
    assert after["strategy"] == "fold_in"
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]
    assert not set(picks) & {i["item_id"] for i in after["items"]}
    moved = Counter(category_of[i["item_id"]] for i in after["items"])
    assert moved[target] > shown.get(target, 0), (target, shown, moved)


def test_forced_retrain_is_picked_up_by_the_engine_without_restart(platform):
    old_version = _recommend(platform, "nobody-e2e")["model_version"]
    reco_pid = platform.first_up["services"]["als_reco_engine"]["pid"]
    response = httpx.post(f"{platform.trainer}/api/v1/train", json={"force": True}, timeout=30)
    assert response.status_code in (200, 202), response.text

    def new_active_version():
        status = httpx.get(f"{platform.reco}/api/v1/status", timeout=10).json()
        version = status.get("model_version")
        return version if version and version != old_version else None

    new_version = _wait_for(new_active_version, WAIT_S, "the engine serving a new version")
    assert _recommend(platform, "nobody-e2e")["model_version"] == new_version
    status = last_json(platform.launcher("--local", "status", "--json"))
    assert status["services"]["als_reco_engine"]["pid"] == reco_pid  # same process: no restart
    assert status["model_version"] == new_version


def test_down_leaves_no_process_behind(platform):
    status = last_json(platform.launcher("--local", "status", "--json"))
    pids = [row["pid"] for row in (*status["services"].values(), *status["infra"].values())]
    assert all(pids), status
    down = last_json(platform.launcher("--local", "down", "--json"))
    assert set(down["stopped"]) == {"als_trainer", "als_reco_engine", "chat_reco_engine", "web"}
    _wait_for(lambda: not any(_alive(pid) for pid in pids), 30, "every process to exit")
    assert not any(port_open(port) for port in platform.ports.values())
    assert not list((Path(platform.env["DATA_DIR"]) / "run").glob("*.pid"))
