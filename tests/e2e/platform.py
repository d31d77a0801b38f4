"""The whole platform started as a user starts it (`bash start_services.sh --local up`), on a
temporary data folder and free ports: shared by the e2e tests, the README command check and the
monitoring check (``default_platform`` in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from Prod.orchestrate.environment import ROOT
from Prod.orchestrate.local_infra import free_port

UP_TIMEOUT_S = 600
DEFAULT_DATASET = ROOT / "Prod" / "data_ingest"


def run(cmd: list[str], env: dict[str, str], timeout_s: float = UP_TIMEOUT_S):
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def last_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


class Platform:
    """The running platform: its environment, URLs and the launcher.

    ``dataset=None`` generates a small store (300 users, 400 items, 9,000 events) under ``root``;
    otherwise the platform ingests that folder (the default dataset for the README check)."""

    def __init__(self, root: Path, dataset: Path | None = None) -> None:
        generated = dataset is None
        if generated:
            from Prod.datasets.generate import generate_dataset

            dataset = root / "dataset"
            generate_dataset(dataset, n_users=300, n_items=400, n_interactions=9000, seed=7)
        self.dataset = dataset
        ports = {
            name: free_port()
            for name in ("pg", "redis", "chroma", "reco", "chat", "trainer", "web")
        }
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
            "WEB_PORT": str(ports["web"]),
            "HOST": "127.0.0.1",
            "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",  # nothing listens: LLM fallback
            "OLLAMA_TIMEOUT_S": "2",
            "RERANKER_MODEL": "",
            "API_KEY": "",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        if generated:  # the shipped tuned parameters fit the default dataset only
            self.env["ALS_PARAMS_PATH"] = str(root / "als_params.json")
        self.reco = f"http://127.0.0.1:{ports['reco']}"
        self.chat = f"http://127.0.0.1:{ports['chat']}"
        self.trainer = f"http://127.0.0.1:{ports['trainer']}"
        self.web = f"http://127.0.0.1:{ports['web']}"
        self.ports = ports
        self.first_up: dict | None = None  # `up --json`'s report
        self.up_output = ""  # what `up` printed (stdout and stderr)

    def launcher(self, *args: str) -> subprocess.CompletedProcess:
        return run(["bash", str(ROOT / "start_services.sh"), *args], self.env)

    def example(self, module: str, *args: str) -> subprocess.CompletedProcess:
        return run([sys.executable, "-m", module, *args], self.env, timeout_s=300)

    def log(self, service: str) -> str:
        """The service's log file as written so far."""
        return (Path(self.env["DATA_DIR"]) / "logs" / f"{service}.log").read_text()


@contextmanager
def running_platform(dataset: Path | None = None) -> Iterator[Platform]:
    """Start the platform (``up --json``), yield it, stop it (also after a failed start)."""
    # not under pytest's basetemp: every pytest session on the machine resets that to 0700,
    # and PostgreSQL (run as an unprivileged user when we are root) must traverse the path
    root = Path(tempfile.mkdtemp(prefix="reco-e2e-"))
    platform = Platform(root, dataset)
    try:
        started = platform.launcher("--local", "up", "--json")
        platform.up_output = started.stdout + started.stderr
        platform.first_up = last_json(started)
        yield platform
    finally:
        platform.launcher("--local", "down")  # leave nothing running
        shutil.rmtree(root, ignore_errors=True)
