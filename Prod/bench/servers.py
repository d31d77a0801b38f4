"""The processes a benchmark starts: application servers and one-shot jobs as ``python -m``
subprocesses of this checkout, logging to a file, and the CPU time they use (Linux /proc)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from Prod.common.errors import InfraError

REPO = Path(__file__).resolve().parents[2]
_LOG_TAIL = 2000  # characters of a failed process's log quoted in the error


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-_LOG_TAIL:]


def _python_m(module: str, args: Sequence[str], env: dict[str, str], logfile) -> dict:
    """The subprocess arguments of ``python -m module *args`` in this checkout, output to
    ``logfile``, no stdin."""
    return {
        "args": [sys.executable, "-m", module, *args],
        "env": env,
        "cwd": REPO,
        "stdout": logfile,
        "stderr": subprocess.STDOUT,
        "stdin": subprocess.DEVNULL,
    }


def start_server(
    module: str,
    env: dict[str, str],
    ready_url: str,
    ready: Callable[[dict], bool],
    log_path: Path,
    args: Sequence[str] = (),
    timeout_s: float = 300,
) -> subprocess.Popen:
    """Start ``python -m module *args``; return once ``ready_url`` answers below 500 with a JSON
    body that ``ready`` accepts. An early exit or no readiness within ``timeout_s`` is an
    :class:`InfraError` quoting the end of the log."""
    with open(log_path, "ab") as logfile:
        proc = subprocess.Popen(**_python_m(module, args, env, logfile))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfraError(f"{module} exited early (exit {proc.returncode}):\n{_tail(log_path)}")
        try:
            response = httpx.get(ready_url, timeout=2)
            if response.status_code < 500 and ready(response.json()):
                return proc
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise InfraError(f"{module} not ready within {timeout_s:.0f} s; see {log_path}")


def stop_server(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 15 s; nothing when it is not running."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def run_job(module: str, args: Sequence[str], env: dict[str, str], log_path: Path) -> None:
    """Run ``python -m module *args`` to the end; a non-zero exit is an :class:`InfraError`."""
    with open(log_path, "ab") as logfile:
        result = subprocess.run(**_python_m(module, args, env, logfile), check=False)
    if result.returncode != 0:
        raise InfraError(f"{module} failed (exit {result.returncode}):\n{_tail(log_path)}")


def cpu_seconds(pid: int | None, *, reaped: bool = False) -> float:
    """User + system CPU seconds so far of a process and its live children, e.g. uvicorn's
    workers or Postgres backends; with ``reaped``, also of its children that have exited.
    NaN without a pid, 0.0 where /proc is unavailable."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    ticks = sum(int(v) for v in fields[11 : 15 if reaped else 13])  # utime stime [cutime cstime]
    return ticks / os.sysconf("SC_CLK_TCK") + sum(cpu_seconds(int(c)) for c in children)
