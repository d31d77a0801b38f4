"""Docker mode for real: `bash start_services.sh --docker` builds and runs docker-compose.yaml.

Opt-in (``-m docker``; `bash docker/testing/check.sh` runs it): needs a Docker engine and Compose
v2, which docker/testing/harness.py provides on a machine without registry access (stand-ins for
the official images, a package index for the builds). One compose project (its own name, data
folder and free host ports) goes through: build, `up` from nothing (cold), both example clients,
fold-in of a new user's interactions, the web page in Chromium (the API key asked once, product
cards from a chat turn, the active version), a forced retrain the engine picks up, `status`, `logs`,
`down` keeping the volumes, `up` again (warm) with a model pull that fails while the chat stays
up, `down --volumes` leaving nothing of the project. Stage timings print at the end and go to
STANDIN_WORK/timings.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec

from Prod.orchestrate.docker import SECRETS, ensure_secrets
from Prod.orchestrate.environment import ROOT
from Prod.orchestrate.local_infra import free_port
from tests.utils.clients import (
    check_als_example,
    check_chat_example,
    check_fold_in_moves_a_trained_user,
    force_retrain,
    get_json,
    wait_for,
)
from tests.web.test_web import card_ids, open_tab, wait

pytestmark = [pytest.mark.docker, pytest.mark.timeout(3600)]

PROJECT = "reco-docker-check"
WAIT_S = 300
DATASET = ROOT / "Prod" / "data_ingest"  # what the ingest image carries
UNAVAILABLE_MODEL = "mistral:unavailable"  # the Ollama stand-in refuses to pull it


def _harness():
    spec = importlib.util.spec_from_file_location("harness", ROOT / "docker/testing/harness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _harness()
TIMINGS: dict[str, float | str] = {}


class Platform:
    def __init__(self, root: Path, build_env: dict[str, str]) -> None:
        self.ports = {name: free_port() for name in ("reco", "chat", "trainer", "web")}
        self.env = {
            **os.environ,
            **build_env,
            "PYTHON": sys.executable,
            "COMPOSE_PROJECT_NAME": PROJECT,
            "DATA_DIR": str(root / "data"),
            "RECO_PORT": str(self.ports["reco"]),
            "CHAT_PORT": str(self.ports["chat"]),
            "TRAINER_PORT": str(self.ports["trainer"]),
            "WEB_PORT": str(self.ports["web"]),
        }
        for name in SECRETS:
            self.env.pop(name, None)  # the launcher generates them into DATA_DIR/docker.env
        self.reco = f"http://127.0.0.1:{self.ports['reco']}"
        self.chat = f"http://127.0.0.1:{self.ports['chat']}"
        self.trainer = f"http://127.0.0.1:{self.ports['trainer']}"
        self.web = f"http://127.0.0.1:{self.ports['web']}"
        self.secrets: dict[str, str] = {}
        self.headers: dict[str, str] = {}

    def load_secrets(self) -> None:
        """The secrets the launcher generates into DATA_DIR/docker.env (any in our environment
        is left out of the platform's, so they are generated as for a new user)."""
        saved = {name: os.environ.pop(name) for name in SECRETS if name in os.environ}
        try:
            self.secrets = ensure_secrets(Path(self.env["DATA_DIR"]) / "docker.env")
        finally:
            os.environ.update(saved)
        self.headers = {"X-API-Key": self.secrets["API_KEY"]}

    def launcher(self, *args: str, extra_env: dict[str, str] | None = None, timeout_s=1800):
        return subprocess.run(
            ["bash", str(ROOT / "start_services.sh"), "--docker", *args],
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def compose(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "compose", *args],
            cwd=ROOT,
            env={**self.env, **self.secrets},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def states(self) -> dict[str, tuple[str, str, int]]:
        """service -> (state, health, exit code) of every container of the project."""
        out = self.compose(
            "ps", "-a", "--format", "{{.Service}} {{.State}} {{.Health}}|{{.ExitCode}}"
        )
        rows = {}
        for line in out.stdout.splitlines():
            head, code = line.rsplit("|", 1)
            name, state, *health = head.split()
            rows[name] = (state, health[0] if health else "", int(code))
        return rows

    def started_at(self, service: str) -> str:
        """``container id@start time`` of the service's container (one replica)."""
        ids = self.compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, ids
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.StartedAt}}", ids[0]],
            capture_output=True,
            text=True,
        )
        return f"{ids[0]}@{out.stdout.strip()}"

    def example(self, module: str, *args: str) -> dict:
        result = subprocess.run(
            [sys.executable, "-m", module, *args, "--api-key", self.secrets["API_KEY"], "--json"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{module}: {result.stdout[-3000:]}\n{result.stderr}"
        return json.loads(result.stdout.strip().splitlines()[-1])


def _timed(key: str, func, *args, **kwargs):
    started = time.monotonic()
    try:
        return func(*args, **kwargs)
    finally:
        TIMINGS[key] = round(time.monotonic() - started, 1)


@pytest.fixture(scope="module")
def platform():
    TIMINGS["dockerd_started_by_check"] = str(harness.ensure_engine())
    harness.ensure_compose()
    index_args, proxy = harness.start_index()
    build_env = harness.build_env(index_args)
    TIMINGS["standins_s"] = round(harness.build_standins(build_env), 1)
    root = Path(tempfile.mkdtemp(prefix="reco-docker-"))
    platform = Platform(root, build_env)
    platform.load_secrets()
    env = {**platform.env, **platform.secrets}
    images = subprocess.run(
        ["docker", "image", "ls", "-q", "reco-platform/*"], capture_output=True, text=True
    ).stdout.split()
    first = "build_cold_s" if not images else "build_first_s"
    TIMINGS[first] = round(harness.compose_build(env), 1)
    TIMINGS["build_warm_s"] = round(harness.compose_build(env), 1)
    try:
        yield platform
    finally:
        platform.compose("down", "--volumes", "--remove-orphans", "-t", "5")
        shutil.rmtree(root, ignore_errors=True)
        if proxy is not None:
            proxy.terminate()
        print(f"\ndocker check timings (s): {json.dumps(TIMINGS)}")
        harness.WORK.mkdir(parents=True, exist_ok=True)
        (harness.WORK / "timings.json").write_text(json.dumps(TIMINGS, indent=1) + "\n")


@pytest.fixture(scope="module")
def cold_up(platform):
    result = _timed("up_cold_s", platform.launcher, "up", "--json")
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_up_from_nothing_starts_every_service_healthy(platform, cold_up):
    assert cold_up["mode"] == "docker"
    assert cold_up["urls"]["als_reco_engine"] == f"http://localhost:{platform.ports['reco']}"
    assert cold_up["background"] == ["pull_ollama_model"]
    states = platform.states()
    for name in ("postgresdb", "redis", "chroma_db", "ollama", "als_trainer"):
        assert states[name][:2] == ("running", "healthy"), (name, states[name])
    for name in ("als_reco_engine", "chat_reco_engine", "web"):
        assert states[name][:2] == ("running", "healthy"), (name, states[name])
    for name in ("ingest_postgres_db", "ingest_chroma_db"):
        assert states[name] == ("exited", "", 0), (name, states[name])
    assert cold_up["urls"]["web"] == f"http://localhost:{platform.ports['web']}"
    for url in (platform.reco, platform.chat, platform.trainer, platform.web):
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200, url
    status = get_json(f"{platform.reco}/api/v1/status", platform.headers)
    assert status["model_version"], "the trainer published no first model"


def test_the_background_model_pull_completes_and_the_chat_sees_the_llm(platform, cold_up):
    wait_for(
        lambda: platform.states()["pull_ollama_model"][0] == "exited", WAIT_S, "the model pull"
    )
    assert platform.states()["pull_ollama_model"][2] == 0
    listed = platform.compose("exec", "-T", "ollama", "ollama", "list")
    assert "mistral:7b" in listed.stdout, listed

    def llm_ready():
        health = get_json(f"{platform.chat}/health", platform.headers)
        return health if health["llm"]["status"] == "ready" else None

    health = wait_for(llm_ready, 60, "the chat seeing the pulled model")
    assert health["postgres"]["status"] == "ready" and health["chroma"]["status"] == "ready"


def test_als_example_client_succeeds(platform, cold_up):
    check_als_example(
        platform.example("Prod.examples.main_example_als", "--reco-url", platform.reco)
    )


def test_chat_example_client_succeeds(platform, cold_up):
    check_chat_example(
        platform.example("Prod.examples.main_example_chat", "--chat-url", platform.chat)
    )


def test_the_web_page_shows_product_cards_and_the_active_version(
    platform, cold_up, browser, screenshots
):
    """The page of the `web` container in Chromium (tests/web's driver): it asks for the
    generated API key once, the operations view shows the version the trainer has active, a
    chat turn shows product cards. Screenshots: docker-ops.png, docker-chat.png."""
    key = platform.secrets["API_KEY"]
    active = wait_for(
        lambda: get_json(f"{platform.trainer}/api/v1/status", platform.headers)["active"],
        WAIT_S,
        "the trainer's first model",
    )["version_id"]
    open_tab(browser, platform, "ops")
    dialog = wait(browser).until(ec.visibility_of_element_located((By.ID, "key-dialog")))
    browser.find_element(By.ID, "key-input").send_keys(key, Keys.ENTER)
    wait(browser).until(lambda b: not dialog.is_displayed())
    row = f'#versions tr[data-version="{active}"]'
    try:
        wait(browser).until(lambda b: b.find_elements(By.CSS_SELECTOR, row))
    except TimeoutException:
        browser.save_screenshot(str(screenshots / "docker-ops-failed.png"))
        shown = browser.find_element(By.ID, "panel-ops").text
        raise AssertionError(
            f"no row of {active}; key dialog open: {dialog.is_displayed()}; "
            f"the view shows:\n{shown}"
        ) from None
    badge = browser.find_element(By.CSS_SELECTOR, f"{row} .badge")
    assert badge.get_attribute("textContent") == "active"  # shown upper-case by the CSS
    stores = browser.find_element(By.ID, "stores").text
    assert "unreachable" not in stores, stores  # the proxy reaches every API from its network
    browser.save_screenshot(str(screenshots / "docker-ops.png"))

    open_tab(browser, platform, "assistant")
    browser.find_element(By.ID, "chat-input").send_keys("wireless earbuds under $60", Keys.ENTER)
    done = ".msg.bot:not(.streaming) .by"
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, done)))
    assert card_ids(browser, "chat-products"), "no product card"
    titles = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#chat-products h3")]
    prices = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "#chat-products .price")]
    assert all(titles) and all(p.startswith("$") for p in prices) and prices, (titles, prices)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg.bot")[-1].text) > 20
    browser.save_screenshot(str(screenshots / "docker-chat.png"))
    assert key not in browser.page_source  # kept in the tab's sessionStorage only
    TIMINGS["screenshots"] = str(screenshots)


def test_a_user_s_new_interactions_change_their_recommendations_via_fold_in(platform, cold_up):
    check_fold_in_moves_a_trained_user(platform.reco, DATASET, platform.headers)


def test_a_forced_retrain_is_picked_up_by_the_engine_without_restart(platform, cold_up):
    started = platform.started_at("als_reco_engine")
    force_retrain(platform.reco, platform.trainer, WAIT_S, platform.headers)
    assert platform.started_at("als_reco_engine") == started  # the same container: no restart


def test_status_and_logs(platform, cold_up):
    status = platform.launcher("status", timeout_s=120)
    assert status.returncode == 0, status.stderr
    for name in ("als_reco_engine", "chat_reco_engine", "als_trainer", "pull_ollama_model"):
        assert name in status.stdout, status.stdout
    assert status.stdout.count("(healthy)") >= 7, status.stdout
    report = json.loads(
        platform.launcher("status", "--json", timeout_s=120).stdout.strip().splitlines()[-1]
    )
    assert report["mode"] == "docker"
    for name in ("als_reco_engine", "chat_reco_engine", "als_trainer", "postgresdb", "ollama"):
        assert report["services"][name]["state"] == "up", report["services"][name]
    assert report["services"]["ingest_postgres_db"] == {
        "state": "exited",
        "replicas": 1,
        "exit_code": 0,
    }
    served = get_json(f"{platform.reco}/api/v1/status", platform.headers)["model_version"]
    assert report["model_version"] == served
    logs = platform.launcher("logs", "als_reco_engine", "-n", "20", timeout_s=120)
    assert logs.returncode == 0, logs.stderr
    assert "als_reco_engine" in logs.stdout and len(logs.stdout.splitlines()) >= 3


def test_down_keeps_the_data_and_up_again_survives_a_failed_model_pull(platform, cold_up):
    version = get_json(f"{platform.reco}/api/v1/status", platform.headers)["model_version"]
    down = _timed("down_s", platform.launcher, "down", timeout_s=300)
    assert down.returncode == 0, down.stderr
    left = harness.leftovers(PROJECT)
    assert left["containers"] == [] and left["networks"] == [], left
    assert len(left["volumes"]) == 5, left  # the data stays for the next `up`

    # warm: images and volumes exist; the configured model cannot be pulled
    again = _timed(
        "up_warm_s",
        platform.launcher,
        "up",
        "--json",
        extra_env={"OLLAMA_MODEL": UNAVAILABLE_MODEL},
    )
    assert again.returncode == 0, f"{again.stdout[-3000:]}\n{again.stderr[-3000:]}"
    wait_for(
        lambda: platform.states()["pull_ollama_model"][0] == "exited", WAIT_S, "the model pull"
    )
    assert platform.states()["pull_ollama_model"][2] != 0  # the pull failed ...
    assert platform.states()["chat_reco_engine"][:2] == ("running", "healthy")  # ... chat is up
    health = get_json(f"{platform.chat}/health", platform.headers)
    assert health["status"] == "degraded" and health["llm"]["status"] == "model_missing", health
    turn = httpx.post(
        f"{platform.chat}/api/v1/chat",
        json={"message": "a gift for a runner under 80 dollars"},
        headers=platform.headers,
        timeout=120,
    )
    assert turn.status_code == 200, turn.text
    assert turn.json()["products"] and turn.json()["generated_by"] == "fallback"
    # the published model survived in the trainer's volume
    assert get_json(f"{platform.reco}/api/v1/status", platform.headers)["model_version"] == version


def _free_range(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports, below the kernel's ephemeral range:
    Docker binds them later, and an ephemeral port can meanwhile go to any outgoing connection."""
    import random

    from Prod.orchestrate.local_infra import port_open

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50):
        base = random.randrange(max(1024, low - 12_000), low - n)
        if not any(port_open(base + i) for i in range(n)):
            return base
    raise AssertionError("no free port range")


def _replica_urls(platform: Platform, n: int) -> list[str]:
    urls = []
    for index in range(1, n + 1):
        out = platform.compose("port", "--index", str(index), "als_reco_engine", "8000")
        urls.append(f"http://{out.stdout.strip()}")
    return urls


def _bench(platform: Platform, url: str, users: Path) -> dict:
    """15 s of load after 5 s of warm-up (each replica's first requests load its caches)."""
    script = ROOT / "docker/testing/serving_load.py"
    args = ["--url", url, "--api-key", platform.secrets["API_KEY"], "--users", str(users)]
    for seconds in ("5", "15"):
        result = subprocess.run(
            [sys.executable, str(script), *args, "--seconds", seconds, "--concurrency", "16"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_three_replicas_behind_the_load_balancer_all_fold_in_a_new_write(platform, cold_up):
    """The loadbalancer profile with 1 then 3 als_reco_engine replicas: throughput through the
    balancer for the record; a write through the balancer reaches fold-in on every replica."""
    base = _free_range(3)
    platform.env.update(
        COMPOSE_PROFILES="loadbalancer",
        RECO_PORT=f"{base}-{base + 2}",
        LB_RECO_PORT=str(free_port()),
        LB_CHAT_PORT=str(free_port()),
    )
    lb = f"http://127.0.0.1:{platform.env['LB_RECO_PORT']}"
    users = Path(platform.env["DATA_DIR"]) / "users.txt"
    events = pd.read_csv(DATASET / "interactions.csv", dtype={"user_id": str})
    users.write_text("\n".join(sorted(set(events["user_id"]))[:2000]) + "\n")
    for replicas in (1, 3):
        platform.env["RECO_REPLICAS"] = str(replicas)
        result = _timed(f"up_{replicas}_replicas_s", platform.launcher, "up", "--json")
        assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert "reco (balanced)" in json.loads(result.stdout.strip().splitlines()[-1])["urls"]
        figures = _bench(platform, lb, users)
        assert figures["errors"] == 0 and figures["requests"] > 0, figures
        TIMINGS[f"rps_{replicas}_replicas"] = figures["rps"]
        TIMINGS[f"p99_ms_{replicas}_replicas"] = figures["p99_ms"]

    replicas = _replica_urls(platform, 3)
    assert len(set(replicas)) == 3, replicas
    user = f"docker-replicas-{os.getpid()}"
    for url in replicas:  # every replica caches the (empty) profile
        assert _recommend_at(url, platform, user)["strategy"] == "popular"
    items = pd.read_csv(DATASET / "items.csv", dtype={"item_id": str})["item_id"][:4]
    batch = [{"user_id": user, "item_id": i, "event": "purchase"} for i in items]
    response = httpx.post(
        f"{lb}/api/v1/interactions", json={"events": batch}, headers=platform.headers, timeout=30
    )
    assert response.status_code == 201, response.text
    started = time.monotonic()
    for url in replicas:  # at once, not after the 60 s profile cache
        body = wait_for(
            lambda url=url: (
                (b := _recommend_at(url, platform, user))["strategy"] == "fold_in" and b
            ),
            5,
            f"fold-in on {url}",
            interval_s=0.05,
        )
        assert not set(items) & {i["item_id"] for i in body["items"]}
    TIMINGS["replicas_fold_in_s"] = round(time.monotonic() - started, 2)


def _recommend_at(url: str, platform: Platform, user_id: str) -> dict:
    return get_json(f"{url}/api/v1/recommend/{user_id}", platform.headers, k=10)


def test_down_volumes_leaves_nothing_of_the_project(platform, cold_up):
    down = _timed("down_volumes_s", platform.launcher, "down", "--volumes", timeout_s=300)
    assert down.returncode == 0, down.stderr
    assert harness.leftovers(PROJECT) == {"containers": [], "networks": [], "volumes": []}
