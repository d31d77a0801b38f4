"""Docker mode: ``docker compose`` drives ``docker-compose.yaml`` (standard library only)."""

from __future__ import annotations

import subprocess
import time

from Prod.orchestrate.environment import ROOT, compose_command, setting

COMPOSE_FILE = ROOT / "docker-compose.yaml"
ONE_SHOT = ("pull_ollama_model", "ingest_postgres_db", "ingest_chroma_db")


class DockerError(RuntimeError):
    """Compose is missing, or a compose command failed."""


def _compose() -> list[str]:
    cmd = compose_command()
    if cmd is None:
        raise DockerError("docker compose is not available (install Docker Compose v2)")
    return [*cmd, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT)]


def _run(args: list[str], check: bool = True) -> int:
    code = subprocess.run([*_compose(), *args], cwd=str(ROOT), check=False).returncode
    if check and code != 0:
        raise DockerError(f"`{' '.join(args)}` failed with exit code {code}")
    return code


def urls() -> dict[str, str]:
    """Published URLs; ports come from ``.env`` / the environment like compose's own ``${..}``."""
    return {
        "als_reco_engine": f"http://localhost:{setting('RECO_PORT', '8000')}",
        "chat_reco_engine": f"http://localhost:{setting('CHAT_PORT', '8001')}",
        "als_trainer": f"http://localhost:{setting('TRAINER_PORT', '8002')}",
    }


def up(timeout_s: float = 1800) -> dict[str, object]:
    """Build and start every container; wait until healthy and the one-shot jobs are done."""
    if _compose()[0] == "docker-compose":  # v1 has no --wait: poll its ps output instead
        _run(["up", "-d", "--build"])
        _poll_healthy(timeout_s)
    else:
        _run(["up", "-d", "--build", "--wait", "--wait-timeout", str(int(timeout_s))])
    return {"mode": "docker", "urls": urls()}


def _poll_healthy(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run([*_compose(), "ps"], capture_output=True, text=True,
                             check=False).stdout  # fmt: skip
        if "starting" not in out and "unhealthy" not in out and "(healthy)" in out:
            return
        time.sleep(3)
    raise DockerError(f"containers not healthy after {timeout_s:.0f} s; see `docker compose ps`")


def down(volumes: bool = False) -> None:
    _run(["down", *(["--volumes"] if volumes else [])])


def status() -> int:
    return _run(["ps", "--all"], check=False)


def logs(service: str | None, follow: bool, lines: int) -> int:
    args = ["logs", "--tail", str(lines), *(["--follow"] if follow else [])]
    return _run([*args, *([service] if service else [])], check=False)
