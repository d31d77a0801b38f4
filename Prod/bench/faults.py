"""``reco bench faults``: the fault-injection set, in one run, with nothing but loopback servers.

Steps: temporary Postgres/Redis/Chroma (:class:`LocalInfra`) on free ports in a temporary folder;
a small generated dataset ingested by the two ingest jobs; the trainer, the serving engine and the
chat engine as real uvicorn subprocesses (the trainer publishes the first model). Then, per fault,
a bounded load of concurrent clients (recommendations, interactions with unique users whose 2xx
acknowledgement is recorded, chat turns) runs while:

- ``postgres`` / ``redis`` / ``chroma``: the server is killed (Postgres: immediate shutdown, the
  postmaster's crash path; Redis and Chroma: SIGKILL), stays down for ``seconds``, is started
  again; the load goes on until every endpoint has answered 2xx for ``window_s`` after the last
  failure. Recovery time runs from the server answering again to the first 2xx of each endpoint
  after the last failure.
- ``trainer``: a real training run in its own process is SIGKILLed mid-publish (user factors in
  Redis, registry row ``training``); the trainer service must stop reporting it running once its
  heartbeat lapses, remove its partial data, then accept ``POST /train``, and the engine must
  serve the new model. Recovery time runs from the kill to that run being accepted.

After each fault every acknowledged interaction is looked up in Postgres. The application
processes are never restarted; the report says whether each is still the one started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

from Prod.bench.servers import REPO, run_job, start_server, stop_server
from Prod.common.errors import InfraError, InvalidInput
from Prod.common.hub import OFFLINE_ENV
from Prod.orchestrate.local_infra import LocalInfra, free_port, pid_alive

Progress = Callable[[str], None]
STORE_FAULTS = ("postgres", "redis", "chroma")
FAULTS = (*STORE_FAULTS, "trainer")
LOAD_ENDPOINTS = ("recommend", "interactions", "chat")
_CHAT_PHRASES = ("show me {}", "something like {}", "{} under $100", "a well rated {}")


@dataclass
class FaultsConfig:
    """Sizes and timings of one run; the defaults take a few minutes on 2 cores."""

    faults: tuple[str, ...] = FAULTS
    seconds: float = 8.0  # how long a store stays down under load
    warmup_s: float = 2.0  # load before each fault
    window_s: float = 2.0  # all-2xx time after the last failure that counts as recovered
    max_recovery_s: float = 60.0  # give up waiting for recovery (the fault reports unrecovered)
    concurrency: int = 4  # client threads
    rate: float = 40.0  # requests/s over all clients at most (bounded load)
    users: int = 300
    items: int = 200
    interactions: int = 6_000
    seed: int = 7
    request_timeout_s: float = 30.0

    def validate(self) -> None:
        unknown = sorted(set(self.faults) - set(FAULTS))
        if unknown or not self.faults:
            raise InvalidInput(
                f"unknown fault(s) {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(FAULTS)}"
            )


@dataclass
class Sample:
    endpoint: str
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    started: float  # time.monotonic()
    ended: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class FaultReport:
    fault: str
    requests: int = 0
    non_2xx: int = 0
    status_503: int = 0
    server_errors: int = 0  # 5xx other than 503
    transport_errors: int = 0  # no HTTP answer from an application server
    acknowledged: int = 0
    acknowledged_missing: int = 0
    recovered: bool = False
    recovery_s: float | None = None
    down_s: float | None = None  # store faults: killed until answering again
    by_endpoint: dict[str, dict[str, int]] = field(default_factory=dict)
    detail: dict[str, object] = field(default_factory=dict)


# --- load generator -------------------------------------------------------------------------


class Load:
    """``concurrency`` client threads cycling over recommend / interactions / chat, paced to
    ``rate`` requests/s in all; each answer recorded as a :class:`Sample`."""

    def __init__(self, urls: dict[str, str], data: dict, cfg: FaultsConfig, tag: str) -> None:
        self.urls, self.data, self.cfg, self.tag = urls, data, cfg, tag
        self.samples: list[Sample] = []
        self.acknowledged: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True, name=f"fault-load-{i}")
            for i in range(cfg.concurrency)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.cfg.request_timeout_s + 5)

    def record(self, endpoint: str, status: int, started: float) -> None:
        with self._lock:
            self.samples.append(Sample(endpoint, status, started, time.monotonic()))

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def _client(self, index: int) -> None:
        rng = np.random.default_rng([self.cfg.seed, index, len(self.tag)])
        interval = self.cfg.concurrency / self.cfg.rate
        users, items, titles = self.data["users"], self.data["items"], self.data["titles"]
        due = time.monotonic()
        n = 0
        with httpx.Client(timeout=self.cfg.request_timeout_s) as http:
            while not self._stop.is_set():
                endpoint = LOAD_ENDPOINTS[(n + index) % len(LOAD_ENDPOINTS)]
                started = time.monotonic()
                status, acked = 0, None
                try:
                    if endpoint == "recommend":
                        user = users[rng.integers(len(users))]
                        response = http.get(f"{self.urls['reco']}/api/v1/recommend/{user}?k=10")
                    elif endpoint == "interactions":
                        acked = f"fault-{self.tag}-{index}-{n}"
                        event = {
                            "user_id": acked,
                            "item_id": items[rng.integers(len(items))],
                            "event": "view",
                        }
                        response = http.post(f"{self.urls['reco']}/api/v1/interactions", json=event)
                    else:
                        phrase = _CHAT_PHRASES[rng.integers(len(_CHAT_PHRASES))]
                        message = phrase.format(titles[rng.integers(len(titles))].lower())
                        response = http.post(
                            f"{self.urls['chat']}/api/v1/chat",
                            json={"message": message, "user_id": users[rng.integers(len(users))]},
                        )
                    status = response.status_code
                    if acked and response.is_success and response.json().get("accepted") == 1:
                        with self._lock:
                            self.acknowledged.append(acked)
                except (httpx.HTTPError, ValueError):
                    pass
                self.record(endpoint, status, started)
                n += 1
                due = max(due + interval, time.monotonic() - interval)
                self._stop.wait(max(0.0, due - time.monotonic()))


def recovery_point(
    samples: list[Sample], since: float, endpoints: tuple[str, ...] = LOAD_ENDPOINTS
) -> tuple[float, float | None]:
    """(end of the last failure after ``since``, or ``since``; when every endpoint had answered
    2xx to a request started after that, or None). Failures are non-2xx answers ending after
    ``since``: a request sent while the store was down may come back after it is up again."""
    last_failure = max((s.ended for s in samples if not s.ok and s.ended > since), default=since)
    firsts = []
    for endpoint in endpoints:
        ok = [
            s.ended
            for s in samples
            if s.endpoint == endpoint and s.ok and s.started >= last_failure
        ]
        if not ok:
            return last_failure, None
        firsts.append(min(ok))
    return last_failure, max(firsts)


def _await_recovery(load: Load, since: float, cfg: FaultsConfig) -> float | None:
    """Keep the load on until ``window_s`` passed since the last failure with every endpoint
    answering 2xx; the time that happened, or None after ``max_recovery_s``."""
    deadline = since + cfg.max_recovery_s
    while True:
        last_failure, recovered_at = recovery_point(load.snapshot(), since)
        now = time.monotonic()
        if recovered_at is not None and now - last_failure >= cfg.window_s:
            return recovered_at
        if now > deadline:
            return None
        time.sleep(0.25)


def summarise(fault: str, samples: list[Sample]) -> FaultReport:
    """Counts of one fault's samples, in all and per endpoint."""
    report = FaultReport(fault)
    for sample in samples:
        row = report.by_endpoint.setdefault(sample.endpoint, {"requests": 0, "non_2xx": 0})
        row["requests"] += 1
        report.requests += 1
        if sample.ok:
            continue
        row["non_2xx"] += 1
        report.non_2xx += 1
        if sample.status == 503:
            report.status_503 += 1
        elif sample.status >= 500:
            report.server_errors += 1
        elif sample.status == 0:
            report.transport_errors += 1
    return report


# --- servers --------------------------------------------------------------------------------


def _service_env(settings_overrides: dict, ports: dict[str, int], dataset: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ENVIRONMENT": "test",
            "DATA_DIR": str(settings_overrides["data_dir"]),
            "DATASET_DIR": str(dataset),
            "DATABASE_URL": str(settings_overrides["database_url"]),
            "REDIS_URL": str(settings_overrides["redis_url"]),
            "CHROMA_HOST": "127.0.0.1",
            "CHROMA_PORT": str(settings_overrides["chroma_port"]),
            "HOST": "127.0.0.1",
            "RECO_PORT": str(ports["reco"]),
            "CHAT_PORT": str(ports["chat"]),
            "TRAINER_PORT": str(ports["trainer"]),
            "LOG_LEVEL": "WARNING",
            "API_KEY": "",
            "RERANKER_MODEL": "",  # no hub download; the chat ranks by embedding similarity
            "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",  # nothing there: template answers
            **OFFLINE_ENV,
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",  # 3 servers + clients share the cores
            "OPENBLAS_NUM_THREADS": "1",
        }
    )
    return env


def _kill_store(server) -> None:
    """Kill one local server without a clean shutdown: Postgres gets SIGQUIT (immediate
    shutdown: backends exit at once, WAL replayed at the next start), Redis and Chroma
    SIGKILL."""
    pid = server.pid()
    if pid is None:
        raise InfraError(f"{server.name} is not running; cannot kill it")
    os.kill(pid, signal.SIGQUIT if server.name == "postgres" else signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.name != "postgres":
        server.pid_path.unlink(missing_ok=True)


# --- data -----------------------------------------------------------------------------------


def _prepare_data(cfg: FaultsConfig, dataset: Path) -> dict:
    import pandas as pd

    from Prod.datasets.generate import generate_dataset

    generate_dataset(
        dataset,
        n_users=cfg.users,
        n_items=cfg.items,
        n_interactions=cfg.interactions,
        seed=cfg.seed,
    )
    items = pd.read_csv(dataset / "items.csv", usecols=["item_id", "title"], dtype=str)
    users = pd.read_csv(dataset / "users.csv", usecols=["user_id"], dtype=str)
    return {
        "users": users["user_id"].tolist(),
        "items": items["item_id"].tolist(),
        # the last two title words ("... Trail Running Shoes" -> "running shoes"): a kind the
        # catalogue sells, so chat turns are ordinary requests, not unmatched ones
        "titles": sorted({" ".join(t.split()[-2:]) for t in items["title"].dropna()}),
    }


def missing_acknowledged(database_url: str, user_ids: list[str]) -> list[str]:
    """The acknowledged interactions (one unique user each) that Postgres does not hold."""
    import psycopg

    from Prod.datasets.ingest.postgres import psycopg_conninfo

    if not user_ids:
        return []
    with psycopg.connect(psycopg_conninfo(database_url)) as conn:
        stored = {
            row[0]
            for row in conn.execute(
                "select distinct user_id from interaction where user_id = any(%s)", (user_ids,)
            )
        }
    return sorted(set(user_ids) - stored)


# --- faults ---------------------------------------------------------------------------------


def _store_fault(
    name: str, infra: LocalInfra, load: Load, cfg: FaultsConfig, progress: Progress
) -> dict:
    server = next(s for s in infra.servers if s.name == name)
    time.sleep(cfg.warmup_s)
    killed = time.monotonic()
    _kill_store(server)
    progress(f"  {name} killed; load goes on for {cfg.seconds:g} s")
    time.sleep(cfg.seconds)
    restarting = time.monotonic()
    server.start(120)
    back = time.monotonic()
    progress(f"  {name} started again ({back - restarting:.1f} s); waiting for all-2xx")
    recovered_at = _await_recovery(load, back, cfg)
    return {
        "down_s": back - killed,
        "recovered_at": recovered_at,
        "since": back,
        "detail": {"store_restart_s": round(back - restarting, 2)},
    }


def _trainer_fault(
    urls: dict[str, str],
    env: dict[str, str],
    root: Path,
    load: Load,
    cfg: FaultsConfig,
    progress: Progress,
) -> dict:
    """SIGKILL a real training run mid-publish; the service must see it dead and train again."""
    from redis import Redis

    from Prod.als_trainer.publisher import new_version_id
    from Prod.bench._killable_trainer import READY_LINE
    from Prod.common.model_store import user_factors_key

    time.sleep(cfg.warmup_s)
    version = new_version_id()
    detail: dict[str, object] = {"killed_version": version}
    with open(root / "killable_trainer.err", "ab") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "Prod.bench._killable_trainer", version],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(300)
    if not lines or lines[0].strip() != READY_LINE:
        proc.kill()
        proc.wait(15)
        raise InfraError(f"the killable trainer never reached publish: {lines[:1]}")
    proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    proc.wait(15)
    proc.stdout.close()
    progress("  trainer run killed mid-publish; polling /status until it is not reported running")

    def call(endpoint: str, method: str, url: str, **kwargs) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = httpx.request(method, url, timeout=cfg.request_timeout_s, **kwargs)
        except httpx.HTTPError:
            load.record(endpoint, 0, started)
            return None
        load.record(endpoint, response.status_code, started)
        return response

    deadline = killed + cfg.max_recovery_s
    trainer = urls["trainer"]
    status = None
    while time.monotonic() < deadline:
        response = call("trainer_status", "GET", f"{trainer}/api/v1/status")
        body = response.json() if response is not None and response.is_success else {}
        last = body.get("last_run") or {}
        if body and body.get("running") is None and last.get("version_id") == version:
            status = last.get("status")
            break
        time.sleep(0.5)
    detail["dead_run_reported_running_s"] = round(time.monotonic() - killed, 2)
    detail["dead_run_status"] = status
    redis = Redis.from_url(env["REDIS_URL"])
    detail["partial_user_factors_left"] = bool(redis.exists(user_factors_key(version)))
    redis.close()
    accepted_at = new_version = None
    if status == "failed":
        response = call(
            "trainer_train",
            "POST",
            f"{trainer}/api/v1/train",
            json={"force": True, "evaluate": False},
        )
        if response is not None and response.status_code == 202:
            ticket = response.json()
            if not ticket.get("already_running"):
                accepted_at, new_version = time.monotonic(), ticket.get("version_id")
        detail["train_answer"] = None if response is None else response.status_code
    detail["retrained_version"] = new_version
    served = False
    if new_version:
        progress(f"  new run {new_version} accepted; waiting for the engine to serve it")
        while time.monotonic() < deadline + cfg.max_recovery_s and not served:
            response = call("reco_status", "GET", f"{urls['reco']}/api/v1/status")
            served = (
                response is not None
                and response.is_success
                and response.json().get("model_version") == new_version
            )
            time.sleep(0.5)
    detail["engine_serves_new_version"] = served
    # recovered: the dead run's partial data gone, a fresh run accepted, its model served, and
    # the load all 2xx
    recovered_at = None
    clean = not detail["partial_user_factors_left"]
    if clean and served and _await_recovery(load, killed, cfg) is not None:
        recovered_at = accepted_at
    return {"down_s": None, "recovered_at": recovered_at, "since": killed, "detail": detail}


# --- the benchmark --------------------------------------------------------------------------


def run_faults_bench(cfg: FaultsConfig, progress: Progress = print) -> dict:
    """Everything above, end to end; returns the report (servers torn down, folder removed)."""
    cfg.validate()
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    rows: list[FaultReport] = []
    procs: dict[str, subprocess.Popen] = {}
    with tempfile.TemporaryDirectory(prefix="reco-faults-") as tmp:
        root = Path(tmp)
        infra = LocalInfra(root / "infra", free_port(), free_port(), free_port())
        try:
            progress("starting temporary Postgres, Redis and Chroma on free ports")
            infra.up(timeout_s=120)
            overrides = infra.settings_overrides()
            ports = {name: free_port() for name in ("reco", "chat", "trainer")}
            urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            dataset = root / "dataset"
            progress(
                f"generating {cfg.users} users, {cfg.items} items, "
                f"{cfg.interactions} interactions; ingesting"
            )
            data = _prepare_data(cfg, dataset)
            env = _service_env(overrides, ports, dataset)
            run_job("Prod.scripts.ingest_postgres_db", [], env, root / "ingest_postgres.log")
            run_job("Prod.scripts.ingest_chroma_db", [], env, root / "ingest_chroma.log")
            progress("starting the trainer (it trains and publishes the first model)")
            procs["trainer"] = start_server(
                "Prod.als_trainer.main",
                env,
                f"{urls['trainer']}/health",
                lambda b: True,
                root / "trainer.log",
            )
            progress("starting the serving engine (ready once it serves a model)")
            procs["reco"] = start_server(
                "Prod.als_reco_engine.main",
                env,
                f"{urls['reco']}/api/v1/status",
                lambda b: b.get("model_version") is not None,
                root / "reco.log",
            )
            progress("starting the chat engine")
            procs["chat"] = start_server(
                "Prod.chat_reco_engine.main",
                env,
                f"{urls['chat']}/health",
                lambda b: b.get("status") in ("ok", "degraded"),
                root / "chat.log",
            )
            pids = {name: proc.pid for name, proc in procs.items()}
            setup_s = time.monotonic() - started
            for fault in cfg.faults:
                progress(f"fault {fault}: {cfg.concurrency} clients, <= {cfg.rate:g} req/s")
                with Load(urls, data, cfg, fault) as load:
                    if fault == "trainer":
                        outcome = _trainer_fault(urls, env, root, load, cfg, progress)
                    else:
                        outcome = _store_fault(fault, infra, load, cfg, progress)
                row = summarise(fault, load.snapshot())
                row.acknowledged = len(load.acknowledged)
                row.acknowledged_missing = len(
                    missing_acknowledged(str(overrides["database_url"]), load.acknowledged)
                )
                row.down_s = None if outcome["down_s"] is None else round(outcome["down_s"], 2)
                row.recovered = outcome["recovered_at"] is not None
                if row.recovered:
                    row.recovery_s = round(max(0.0, outcome["recovered_at"] - outcome["since"]), 2)
                row.detail = outcome["detail"]
                rows.append(row)
                progress(
                    f"  {fault}: {row.requests} requests, {row.non_2xx} non-2xx "
                    f"({row.server_errors} server errors), {row.acknowledged_missing} of "
                    f"{row.acknowledged} acknowledged writes missing, recovery "
                    f"{row.recovery_s if row.recovered else 'none'} s"
                )
            restarted = sorted(
                name
                for name, proc in procs.items()
                if proc.poll() is not None or proc.pid != pids[name]
            )
        finally:
            for proc in procs.values():
                stop_server(proc)
            infra.down()
    faults = [asdict(row) for row in rows]
    met = {
        "no_server_errors": all(r.server_errors == 0 and r.transport_errors == 0 for r in rows),
        "no_acknowledged_missing": all(r.acknowledged_missing == 0 for r in rows),
        "recovered_without_restarts": all(r.recovered for r in rows) and not restarted,
    }
    return {
        "faults": faults,
        "targets": {**met, "all_met": all(met.values())},
        "app_processes_exited": restarted,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("seed",)},
        "setup_s": round(setup_s, 1),
        "total_s": round(time.monotonic() - started, 1),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
