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
from pathlib import Path

import httpx
import pytest

from Prod.orchestrate.local_infra import port_open
from tests.e2e.platform import last_json, running_platform
from tests.utils.clients import (
    check_als_example,
    check_chat_example,
    check_fold_in_moves_a_trained_user,
    force_retrain,
)

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
    check_als_example(summary)
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
    check_chat_example(summary)
    # the price limit of the first turn is carried into the follow-ups ("cheaper" lowers it)
    limits = [turn["filters"].get("max_price") for turn in summary["turns"]]
    assert limits[0] == limits[1] == 100 and limits[2] is not None and limits[2] < 100, limits
    assert summary["turns"][1]["filters"].get("min_rating") == 4
    assert {turn["generated_by"] for turn in summary["turns"]} == {"fallback"}
    # it deleted its session at the end: nothing of it is left in the live data
    assert summary["deleted_messages"] == 6
    history = httpx.get(f"{platform.chat}/api/v1/chat/{summary['session_id']}/history", timeout=30)
    assert history.status_code == 404, history.text


def test_new_interactions_change_a_trained_user_s_recommendations_via_fold_in(platform):
    check_fold_in_moves_a_trained_user(platform.reco, platform.dataset)


def test_forced_retrain_is_picked_up_by_the_engine_without_restart(platform):
    reco_pid = platform.first_up["services"]["als_reco_engine"]["pid"]
    new_version = force_retrain(platform.reco, platform.trainer, WAIT_S)
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
