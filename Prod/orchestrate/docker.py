"""Docker mode: ``docker compose`` drives ``docker-compose.yaml`` (standard library only)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

from Prod.orchestrate.environment import ROOT, compose_command, data_dir, read_dotenv, setting

COMPOSE_FILE = ROOT / "docker-compose.yaml"
ONE_SHOT = ("pull_ollama_model", "ingest_postgres_db", "ingest_chroma_db")
# Started after the platform is up and not waited for: a slow (~4 GB) or failed pull must not
# hold `up` or the chat back (it answers retrieval-only and reports the LLM in /health).
BACKGROUND = ("pull_ollama_model",)
# Required by docker-compose.yaml (`${NAME:?...}`): never shipped, generated once per machine.
SECRETS = ("API_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")


class DockerError(RuntimeError):
    """Compose is missing, or a compose command failed."""


def secrets_file() -> Path:
    """Where Docker mode keeps the secrets it generated (``DATA_DIR/docker.env``, git-ignored)."""
    return data_dir() / "docker.env"


def ensure_secrets(path: Path | None = None) -> dict[str, str]:
    """The values of :data:`SECRETS` that compose must be given.

    A secret set in the environment or ``.env`` wins and is not returned; any other comes from
    ``path`` (default :func:`secrets_file`), where a missing one is generated once
    (``secrets.token_urlsafe(32)``, 43 characters) and kept (mode 0600): the Postgres volume keeps
    the password it was created with, so the file must outlive ``up``/``down``.
    """
    path = path or secrets_file()
    stored = read_dotenv(path)
    missing = [name for name in SECRETS if not setting(name) and not stored.get(name)]
    if missing:
        stored.update({name: secrets.token_urlsafe(32) for name in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Docker mode's secrets, generated once by `start_services.sh --docker`; keep this",
            "# file (the Postgres volume keeps its password). Send API_KEY as header X-API-Key.",
            *(f"{name}={value}" for name, value in stored.items()),
        ]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    return {name: stored[name] for name in SECRETS if not setting(name)}


def _env() -> dict[str, str]:
    """The process environment plus the generated secrets (compose interpolates from both)."""
    return {**os.environ, **ensure_secrets()}


def _compose() -> list[str]:
    cmd = compose_command()
    if cmd is None:
        raise DockerError("docker compose is not available (install Docker Compose v2)")
    return [*cmd, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT)]


def _run(args: list[str], check: bool = True) -> int:
    code = subprocess.run([*_compose(), *args], cwd=str(ROOT), env=_env(), check=False).returncode
    if check and code != 0:
        raise DockerError(f"`{' '.join(args)}` failed with exit code {code}")
    return code


def _port(name: str, default: str) -> str:
    """The published host port; of a range (``8000-8002``, for ``--scale``) the first."""
    return setting(name, default).split("-", 1)[0]


def urls() -> dict[str, str]:
    """Published URLs; ports come from ``.env`` / the environment like compose's own ``${..}``."""
    return {
        "als_reco_engine": f"http://localhost:{_port('RECO_PORT', '8000')}",
        "chat_reco_engine": f"http://localhost:{_port('CHAT_PORT', '8001')}",
        "als_trainer": f"http://localhost:{_port('TRAINER_PORT', '8002')}",
        "web": f"http://localhost:{_port('WEB_PORT', '8003')}",  # the page to try it
    }


def services() -> list[str]:
    """The services of the active profiles (``COMPOSE_PROFILES``), as compose lists them."""
    result = subprocess.run(
        [*_compose(), "config", "--services"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=_env(),
        check=False,
    )
    if result.returncode != 0:
        raise DockerError(f"`config --services` failed: {result.stderr.strip()}")
    return result.stdout.split()


def up(timeout_s: float = 1800) -> dict[str, object]:
    """Build and start every container; wait until healthy and the one-shot jobs they depend on
    are done; then start the model pull in the background (:data:`BACKGROUND`)."""
    v1 = _compose()[0] == "docker-compose"
    listed = services()
    waited = [name for name in listed if name not in BACKGROUND]
    background = [name for name in listed if name in BACKGROUND]
    try:
        if v1:  # v1 has no --wait: poll its ps output instead
            _run(["up", "-d", "--build", *waited])
            _poll_healthy(timeout_s)
        else:
            _run(["up", "-d", "--build", "--wait", "--wait-timeout", str(int(timeout_s)), *waited])
        if background:
            _run(["up", "-d", "--no-build", *background])
    except DockerError as exc:  # e.g. a service refusing a weak API_KEY says so in its log
        raise DockerError(f"{exc}; see `bash start_services.sh --docker logs <service>`") from exc
    found = urls()
    if "loadbalancer" in listed:  # every replica behind one port each
        found["reco (balanced)"] = f"http://localhost:{_port('LB_RECO_PORT', '8080')}"
        found["chat (balanced)"] = f"http://localhost:{_port('LB_CHAT_PORT', '8081')}"
    return {
        "mode": "docker",
        "urls": found,
        "secrets_file": str(secrets_file()),
        "background": background,
    }


def _poll_healthy(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(
            [*_compose(), "ps"], capture_output=True, text=True, env=_env(), check=False
        ).stdout
        if "starting" not in out and "unhealthy" not in out and "(healthy)" in out:
            return
        time.sleep(3)
    raise DockerError(f"containers not healthy after {timeout_s:.0f} s; see `docker compose ps`")


def down(volumes: bool = False) -> None:
    _run(["down", *(["--volumes"] if volumes else [])])


def status() -> int:
    return _run(["ps", "--all"], check=False)


def status_report() -> dict[str, object]:
    """``status --json``: each service's state (``up`` = running and healthy, else compose's
    state/health, one-shots with their exit code), replicas, the URLs and the served model."""
    out = subprocess.run(
        [*_compose(), "ps", "--all", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=_env(),
        check=False,
    ).stdout.strip()
    rows = json.loads(out) if out.startswith("[") else [json.loads(x) for x in out.splitlines()]
    services: dict[str, dict[str, object]] = {}
    for row in rows:
        health, state = row.get("Health") or "", row.get("State") or ""
        if state == "running":
            state = "up" if health in ("", "healthy") else health
        entry = services.setdefault(row["Service"], {"state": state, "replicas": 0})
        entry["replicas"] = int(entry["replicas"]) + 1
        if state == "exited":
            entry["exit_code"] = row.get("ExitCode")
        elif entry["state"] != state:  # replicas disagree: the worst one shows
            entry["state"] = state if entry["state"] == "up" else entry["state"]
    return {
        "mode": "docker",
        "services": services,
        "urls": urls(),
        "model_version": _model_version(),
    }


def _model_version() -> str | None:
    """The version ``als_reco_engine`` serves, or None when it does not answer."""
    api_key = setting("API_KEY") or _env().get("API_KEY", "")
    request = urllib.request.Request(
        f"{urls()['als_reco_engine']}/api/v1/status", headers={"X-API-Key": api_key}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response).get("model_version")
    except (OSError, ValueError):
        return None


def logs(service: str | None, follow: bool, lines: int) -> int:
    args = ["logs", "--tail", str(lines), *(["--follow"] if follow else [])]
    return _run([*args, *([service] if service else [])], check=False)
