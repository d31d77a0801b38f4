"""A clean start-up log: no library noise, no alarming lines that mean nothing (the started
services' logs are read in tests/e2e/test_platform.py)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from Prod.common.logs import configure_logging
from Prod.orchestrate.environment import ROOT


@pytest.mark.parametrize("package", ["als_reco_engine", "chat_reco_engine", "als_trainer"])
def test_importing_a_service_package_leaves_its_main_module_to_python_m(package):
    """`python -m Prod.<service>.main` warns (RuntimeWarning, the first line of the log) when
    importing the package already imported ``main``."""
    code = (
        f"import sys, Prod.{package}; "
        f"sys.exit('Prod.{package}.main' in sys.modules)"  # exit 1 when main came along
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr or f"Prod.{package} imports its main module"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("svc", "INFO", "text", stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)


def _access(path: str, status: int) -> None:
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", status
    )


def test_probes_and_uvicorn_chatter_stay_out_of_the_log(log_stream):
    _access("/health", 200)
    _access("/metrics", 200)
    _access("/health", 503)  # a failing probe is news
    _access("/api/v1/status", 200)
    uvicorn = logging.getLogger("uvicorn.error")
    uvicorn.info("Waiting for application startup.")
    uvicorn.info("Uvicorn running on %s (Press CTRL+C to quit)", "http://127.0.0.1:1")
    logging.getLogger("apscheduler.scheduler").info("Added job to job store")
    lines = log_stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert '"GET /health HTTP/1.1" 503' in lines[0]
    assert '"GET /api/v1/status HTTP/1.1" 200' in lines[1]
    # uvicorn's general logger is shown as "uvicorn", not as "uvicorn.error" on an INFO line
    assert " INFO [svc] uvicorn: Uvicorn running on http://127.0.0.1:1" in lines[2]
