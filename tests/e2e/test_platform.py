"""End to end: `bash start_services.sh` in local mode on a temporary data folder and free ports.

One platform starts for the module (small generated store, no Ollama, no cross-encoder), then:
both example clients succeed against it; new interactions change a user's recommendations through
fold-in; a forced retrain publishes a new version the serving engine picks up without a restart;
`down` leaves no process behind. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest

from Prod.common.supervisor import free_port, port_open
from Prod.orchestrate.environment import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

UP_TIMEOUT_S = 600
WAIT_S = 240


def _run(cmd: list[str], env: dict[str, str], timeout_s: float = UP_TIMEOUT_S):
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _last_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


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


class Platform:
    """The running platform: its environment, URLs and the launcher."""

    def __init__(self, root: Path) -> None:
        from Prod.common.data.generate import generate_dataset

        self.dataset = root / "dataset"
        generate_dataset(self.dataset, n_users=300, n_items=400, n_interactions=9000, seed=7)
        ports = {name: free_port() for name in ("pg", "redis", "chroma", "reco", "chat", "trainer")}
        self.env = {
            **os.environ,
            "START_SERVICES_NO_VENV": "1",
            "PYTHON": sys.executable,
            "DATA_DIR": str(root / "data"),
            "DATASET_DIR": str(self.dataset),
            "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{ports['pg']}/postgres",
            "REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
            "CHROMA_HOST": "127.0.0.1",
            "CHROMA_PORT": str(ports["chroma"]),
            "RECO_PORT": str(ports["reco"]),
            "CHAT_PORT": str(ports["chat"]),
            "TRAINER_PORT": str(ports["trainer"]),
            "HOST": "127.0.0.1",
            "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",  # nothing listens: LLM fallback
            "OLLAMA_TIMEOUT_S": "2",
            "RERANKER_MODEL": "",
            "ALS_PARAMS_PATH": str(root / "als_params.json"),
            "API_KEY": "",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        self.reco = f"http://127.0.0.1:{ports['reco']}"
        self.chat = f"http://127.0.0.1:{ports['chat']}"
        self.trainer = f"http://127.0.0.1:{ports['trainer']}"
        self.ports = ports

    def launcher(self, *args: str) -> subprocess.CompletedProcess:
        return _run(["bash", str(ROOT / "start_services.sh"), *args], self.env)

    def example(self, module: str, *args: str) -> subprocess.CompletedProcess:
        return _run([sys.executable, "-m", module, *args], self.env, timeout_s=300)


@pytest.fixture(scope="module")
def platform():
    # not under pytest's basetemp: every pytest session on the machine resets that to 0700,
    # and PostgreSQL (run as an unprivileged user when we are root) must traverse the path
    root = Path(tempfile.mkdtemp(prefix="reco-e2e-"))
    platform = Platform(root)
    platform.first_up = None
    try:
        platform.first_up = _last_json(platform.launcher("--local", "up", "--json"))
        yield platform
    finally:
        platform.launcher("--local", "down")  # also after a failed start: leave nothing running
        shutil.rmtree(root, ignore_errors=True)


def test_up_starts_every_service_and_publishes_a_model(platform):
    result = platform.first_up
    assert result["mode"] == "local"
    assert {name: row["state"] for name, row in result["services"].items()} == {
        "als_trainer": "up",
        "als_reco_engine": "up",
        "chat_reco_engine": "up",
    }
    assert all(row["healthy"] for row in result["infra"].values())
    assert result["model_version"], "the trainer published no first model"
    assert set(result["data"]["ingested"]) == {"postgres", "chroma"}
    assert result["ollama"]["reachable"] is False
    for name, row in result["services"].items():
        assert httpx.get(f"{row['url']}/health", timeout=5).is_success, name


def test_up_again_is_safe_and_keeps_the_same_processes(platform):
    again = _last_json(platform.launcher("--local", "up", "--json"))
    assert set(again["started"].values()) == {"running"}
    assert again["data"]["ingested"] == []
    before = {name: row["pid"] for name, row in platform.first_up["services"].items()}
    assert {name: row["pid"] for name, row in again["services"].items()} == before


def test_status_reports_services_ports_and_model_version(platform):
    status = _last_json(platform.launcher("--local", "status", "--json"))
    assert status["services"]["als_reco_engine"]["port"] == platform.ports["reco"]
    assert status["services"]["chat_reco_engine"]["state"] == "up"
    assert status["model_version"] == platform.first_up["model_version"]


def test_als_example_client_succeeds(platform):
    summary = _last_json(
        platform.example("Prod.examples.main_example_als", "--reco-url", platform.reco, "--json")
    )
    assert summary["strategy_before"] == "popular"
    assert summary["strategy_after"] == "fold_in"
    assert summary["recommended"] and not set(summary["recommended"]) & set(summary["interacted"])
    assert summary["similar"] and summary["similar_to"] not in summary["similar"]
    assert summary["history_entries"] >= 2


def test_chat_example_client_succeeds(platform):
    summary = _last_json(
        platform.example("Prod.examples.main_example_chat", "--chat-url", platform.chat, "--json")
    )
    assert len(summary["turns"]) == 3 and summary["turns"][0]["products"]
    # the price limit of the first turn is carried into the follow-ups ("cheaper" lowers it)
    limits = [turn["filters"].get("max_price") for turn in summary["turns"]]
    assert limits[0] == limits[1] == 100 and limits[2] is not None and limits[2] < 100, limits
    assert summary["turns"][1]["filters"].get("min_rating") == 4
    assert {turn["generated_by"] for turn in summary["turns"]} == {"fallback"}
    assert summary["history_messages"] == 6


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
    status = _last_json(platform.launcher("--local", "status", "--json"))
    assert status["services"]["als_reco_engine"]["pid"] == reco_pid  # same process: no restart
    assert status["model_version"] == new_version


def test_down_leaves_no_process_behind(platform):
    status = _last_json(platform.launcher("--local", "status", "--json"))
    pids = [row["pid"] for row in (*status["services"].values(), *status["infra"].values())]
    assert all(pids), status
    down = _last_json(platform.launcher("--local", "down", "--json"))
    assert set(down["stopped"]) == {"als_trainer", "als_reco_engine", "chat_reco_engine"}
    _wait_for(lambda: not any(_alive(pid) for pid in pids), 30, "every process to exit")
    assert not any(port_open(port) for port in platform.ports.values())
    assert not list((Path(platform.env["DATA_DIR"]) / "run").glob("*.pid"))
