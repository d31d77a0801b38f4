"""A real trainer in its own process, for tests that kill one: ``python -m MODULE CONFIG ARGS...``
where CONFIG is the JSON of the settings a trainer needs (its stores, data and params paths)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from config import Settings

REPO = Path(__file__).resolve().parents[2]
TRAINER_SETTINGS = {
    "environment",
    "data_dir",
    "database_url",
    "redis_url",
    "chroma_host",
    "chroma_port",
    "als_params_path",
}


def start_trainer(
    settings: Settings, module: str, *args: str, stdout: int | None = subprocess.PIPE
) -> subprocess.Popen:
    """``module`` started from the repository root with the settings subset as its first
    argument and ``args`` after it; its stdout is a text pipe unless ``stdout`` says otherwise."""
    config = settings.model_dump_json(include=TRAINER_SETTINGS)
    return subprocess.Popen(
        [sys.executable, "-m", module, config, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=stdout,
        text=True,
    )
