"""Settings the launcher needs before the project's dependencies exist (standard library only).

Values come from the process environment first, then ``.env`` at the project root - the same
precedence as ``config.Settings`` - so the shell script, Docker mode and local mode agree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOTENV = ROOT / ".env"


def read_dotenv(path: Path = DOTENV) -> dict[str, str]:
    """``KEY=value`` lines of a dotenv file (comments, blanks and ``export`` ignored; unquoted)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.split(" #", 1)[0].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().upper()] = value
    return values


def setting(name: str, default: str = "") -> str:
    """One setting by its env name: environment (any case) wins over ``.env``, then ``default``."""
    for key in (name.upper(), name.lower()):
        if key in os.environ:
            return os.environ[key]
    return read_dotenv().get(name.upper(), default)


def data_dir() -> Path:
    """The local data folder (``DATA_DIR``; relative paths are anchored at the project root)."""
    path = Path(setting("DATA_DIR", ".local"))
    return path if path.is_absolute() else ROOT / path


def run_dir() -> Path:
    return data_dir() / "run"


def _succeeds(cmd: list[str], timeout_s: float = 15) -> bool:
    try:
        result = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def compose_command() -> list[str] | None:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1), whichever works; else None."""
    if shutil.which("docker") and _succeeds(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose") and _succeeds(["docker-compose", "version"]):
        return ["docker-compose"]
    return None


def docker_engine_running() -> bool:
    return bool(shutil.which("docker")) and _succeeds(["docker", "info"], timeout_s=20)


def docker_usable() -> bool:
    """Compose is installed AND a Docker engine answers."""
    return compose_command() is not None and docker_engine_running()


def local_platform_running() -> bool:
    """True when local mode left pid files behind (so ``down``/``status`` should go local)."""
    return any(run_dir().glob("*.pid"))


def detect_mode(forced: str | None = None) -> str:
    """``docker`` or ``local``: the forced one, else local when it is running, else Docker when
    usable, else local."""
    if forced:
        return forced
    if local_platform_running():
        return "local"
    return "docker" if docker_usable() else "local"
