"""Local mode: the real servers from PyPI wheels plus the three services as background processes.

Everything lives under ``settings.data_dir``: the servers' data (see
:mod:`Prod.orchestrate.local_infra`), ``logs/<name>.log`` and ``run/<name>.pid``. A service pid file
records the process start time too, so ``down`` never signals a process that merely reused a pid:
it stops exactly what ``up`` started, and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from config import Settings
from Prod.common.errors import InfraError
from Prod.common.hub import OFFLINE_ENV
from Prod.orchestrate.local_infra import LocalInfra, pid_alive, port_open

# Start order matters: the trainer publishes the first model the engines then load.
SERVICE_NAMES = ("als_trainer", "als_reco_engine", "chat_reco_engine", "web")
INGEST_JOBS = ("ingest_postgres_db", "ingest_chroma_db")
Reporter = Callable[[str], None]


@dataclass(frozen=True)
class Service:
    """One API service started by local mode."""

    name: str
    module: str
    port: int
    host: str
    data_dir: Path

    @property
    def probe_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def url(self) -> str:
        return f"http://{self.probe_host}:{self.port}"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "run" / f"{self.name}.pid"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / f"{self.name}.log"


def services_for(settings: Settings) -> list[Service]:
    ports = {
        "als_trainer": settings.trainer_port,
        "als_reco_engine": settings.reco_port,
        "chat_reco_engine": settings.chat_port,
        "web": settings.web_port,
    }
    root = Path(settings.data_dir).resolve()
    return [
        Service(name, f"Prod.{name}.main", int(ports[name]), settings.host, root)
        for name in SERVICE_NAMES
    ]


# --- processes ------------------------------------------------------------------------------


def _start_ticks(pid: int) -> str | None:
    """Kernel start time of a process (Linux); None where /proc is not available."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def read_pid(pid_path: Path) -> int | None:
    """The pid recorded in ``pid_path`` when that very process still runs; else None."""
    try:
        record = json.loads(pid_path.read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not pid_alive(pid):
        return None
    started = record.get("start_ticks")
    if started is not None and _start_ticks(pid) not in (None, started):
        return None  # the pid was reused by another process
    return pid


def spawn(cmd: list[str], log_path: Path, pid_path: Path, env: dict[str, str]) -> int:
    """Start ``cmd`` in its own session (it outlives this launcher) and record its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logfile:
        proc = subprocess.Popen(
            cmd,
            cwd=str(Path(__file__).resolve().parents[2]),
            env=env,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    record = {"pid": proc.pid, "start_ticks": _start_ticks(proc.pid), "cmd": cmd}
    pid_path.write_text(json.dumps(record))
    return proc.pid


def stop_process(pid_path: Path, timeout_s: float = 20) -> bool:
    """SIGTERM the recorded process group, SIGKILL after ``timeout_s``; True if one was running."""
    pid = read_pid(pid_path)
    if pid is None:
        pid_path.unlink(missing_ok=True)
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
    pid_path.unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # start_new_session made the service its own group leader: this also reaches its children
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- health ---------------------------------------------------------------------------------


def healthy(service: Service, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(f"{service.url}/health", timeout=timeout_s).is_success
    except httpx.HTTPError:
        return False


def wait_healthy(service: Service, timeout_s: float) -> None:
    """Wait for ``/health``; fail early, with the log's tail, when the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if healthy(service):
            return
        if read_pid(service.pid_path) is None:
            raise InfraError(
                f"{service.name} exited during start-up; last log lines "
                f"({service.log_path}):\n{log_tail(service.log_path)}"
            )
        time.sleep(0.3)
    raise InfraError(
        f"{service.name} not healthy on {service.url} after {timeout_s:.0f} s; "
        f"see {service.log_path}:\n{log_tail(service.log_path)}"
    )


def ollama_status(settings: Settings) -> dict[str, object]:
    """Whether Ollama answers at ``settings.ollama_host`` and has the configured model."""
    try:
        response = httpx.get(f"{settings.ollama_host.rstrip('/')}/api/tags", timeout=2.0)
        response.raise_for_status()
        names = {m.get("name", "") for m in response.json().get("models", [])}
    except (httpx.HTTPError, ValueError):
        return {"reachable": False, "host": settings.ollama_host, "model_present": False}
    wanted = settings.ollama_model
    present = wanted in names or f"{wanted}:latest" in names
    return {"reachable": True, "host": settings.ollama_host, "model_present": present}


def active_model_version(settings: Settings) -> str | None:
    from Prod.common.model_store import active_version
    from Prod.common.stores import redis_for

    try:
        return active_version(redis_for(settings))
    except Exception:  # a down Redis only means "unknown" here
        return None


def reranker_cached(model: str) -> bool:
    """True when the cross-encoder can load without a network (a folder, or in the HF cache)."""
    if not model or Path(model).exists():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:
        return False


def child_env(settings: Settings) -> dict[str, str]:
    """Environment of every child: this one, unbuffered, offline hub when nothing to fetch."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    if not reranker_cached(settings.reranker_model):
        env.update(OFFLINE_ENV)  # don't stall start-up on an unreachable hub
    return env


# --- data -----------------------------------------------------------------------------------


def dataset_present(dataset_dir: Path) -> bool:
    return all((dataset_dir / name).exists() for name in ("items.csv", "interactions.csv"))


def catalogue_counts(settings: Settings) -> tuple[int, int]:
    """(items in Postgres, products in Chroma); 0 where the table or collection is missing."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from Prod.common.db import get_engine
    from Prod.common.models import Item
    from Prod.common.stores import chroma_for

    try:
        with get_engine(settings.database_url).connect() as conn:
            items = int(conn.execute(select(func.count()).select_from(Item)).scalar_one())
    except SQLAlchemyError:
        items = 0
    try:
        products = chroma_for(settings).get_collection(settings.products_collection).count()
    except Exception:  # chromadb raises its own NotFound / ValueError variants
        products = 0
    return items, products


def run_job(name: str, args: list[str], settings: Settings, env: dict[str, str]) -> None:
    """Run one one-shot job to completion, its output appended to ``logs/<name>.log``."""
    log_path = Path(settings.data_dir).resolve() / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logfile:
        result = subprocess.run(
            [sys.executable, *args],
            env=env,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parents[2]),
            check=False,
        )
    if result.returncode != 0:
        raise InfraError(
            f"{name} failed (exit {result.returncode}); {log_path}:\n{log_tail(log_path)}"
        )


def ensure_data(settings: Settings, env: dict[str, str], report: Reporter) -> dict[str, object]:
    """Generate the default dataset if absent; ingest it when Postgres or Chroma is empty."""
    dataset = Path(settings.dataset_dir)
    done: dict[str, object] = {"dataset": str(dataset), "generated": False, "ingested": []}
    if not dataset_present(dataset):
        from Prod.datasets.generate import generate_dataset

        report(f"generating the default dataset into {dataset} (seeded)")
        done["generated"] = generate_dataset(dataset)
    items, products = catalogue_counts(settings)
    if items == 0:
        report("Postgres is empty: running ingest_postgres_db")
        run_job("ingest_postgres_db", ["-m", "Prod.scripts.ingest_postgres_db"], settings, env)
        done["ingested"].append("postgres")
    if products == 0:
        report("Chroma has no products: running ingest_chroma_db (embeds the catalogue)")
        run_job("ingest_chroma_db", ["-m", "Prod.scripts.ingest_chroma_db"], settings, env)
        done["ingested"].append("chroma")
    done["items"], done["products"] = catalogue_counts(settings)
    return done


# --- commands -------------------------------------------------------------------------------


def start_service(service: Service, env: dict[str, str], report: Reporter) -> str:
    """Start one service unless it already runs; 'started' or 'running'."""
    if read_pid(service.pid_path) is not None:
        report(f"{service.name} already running (pid file {service.pid_path})")
        return "running"
    if port_open(service.port, service.probe_host):
        raise InfraError(
            f"port {service.port} for {service.name} is taken by a process this launcher did not "
            f"start; stop it or choose another port in .env"
        )
    spawn([sys.executable, "-m", service.module], service.log_path, service.pid_path, env)
    report(f"{service.name} starting on {service.url} (log {service.log_path})")
    return "started"


def wait_for_model(settings: Settings, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        version = active_model_version(settings)
        if version:
            return version
        time.sleep(0.5)
    return None


def up(settings: Settings, report: Reporter, timeout_s: float = 300) -> dict[str, object]:
    """Start (or keep) everything; return what runs where. Safe to re-run."""
    started = time.monotonic()
    infra = LocalInfra.from_settings(settings)
    report("starting local Postgres, Redis and Chroma")
    infra.up(timeout_s=120)
    env = child_env(settings)
    data = ensure_data(settings, env, report)
    services = services_for(settings)
    states = {s.name: start_service(s, env, report) for s in services}
    for service in services:
        wait_healthy(service, timeout_s)
        report(f"{service.name} healthy")
    report("waiting for the trainer to publish a model")
    version = wait_for_model(settings, timeout_s)
    result = status(settings)
    result.update(
        data=data,
        started=states,
        model_version=version,
        offline_hub=env.get("HF_HUB_OFFLINE") == "1",
        seconds=round(time.monotonic() - started, 1),
    )
    return result


def down(settings: Settings, report: Reporter) -> dict[str, object]:
    """Stop the services this data folder's pid files name, then the local servers."""
    stopped = []
    for service in reversed(services_for(settings)):
        if stop_process(service.pid_path):
            stopped.append(service.name)
            report(f"{service.name} stopped")
    _persist_redis(settings, report)
    LocalInfra.from_settings(settings).down()
    report("local servers stopped")
    return {"stopped": stopped, "infra": LocalInfra.from_settings(settings).status()}


def _persist_redis(settings: Settings, report: Reporter) -> None:
    """Snapshot Redis before stopping it, so the published model survives a down/up cycle
    (the local server does not always write its final snapshot on SIGTERM)."""
    from Prod.common.stores import redis_for

    try:
        redis_for(settings).save()
    except Exception as exc:  # a stopped Redis has nothing to save
        report(f"redis snapshot skipped: {exc}")


def status(settings: Settings) -> dict[str, object]:
    """Each service (up/down, pid, port, url), the local servers, model version and Ollama."""
    services = {}
    for service in services_for(settings):
        pid = read_pid(service.pid_path)
        services[service.name] = {
            "state": "up" if pid and healthy(service) else ("starting" if pid else "down"),
            "pid": pid,
            "port": service.port,
            "url": service.url,
            "log": str(service.log_path),
        }
    return {
        "mode": "local",
        "services": services,
        "infra": LocalInfra.from_settings(settings).status(),
        "model_version": active_model_version(settings),
        "ollama": ollama_status(settings),
        "data_dir": str(Path(settings.data_dir).resolve()),
    }


def log_files(settings: Settings, name: str | None = None) -> list[Path]:
    """Log files of one service/server/job (``name``) or all of them."""
    folder = Path(settings.data_dir).resolve() / "logs"
    if name:
        path = folder / f"{name}.log"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in folder.glob("*.log"))) or "none yet"
            raise InfraError(f"no log for {name!r} in {folder} (known: {known})")
        return [path]
    return sorted(folder.glob("*.log"))
