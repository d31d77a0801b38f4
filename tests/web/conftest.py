"""A real browser (Debian's chromium driven by Selenium through chromium-driver) against the
platform as `start_services.sh --local up` starts it (``default_platform``).

Chromium missing is an error, never a skip: `.ci/run` installs it (`apt-get install chromium
chromium-driver`). Screenshots go to ``<basetemp>/screenshots`` (test artefacts, not committed).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

#: the flags the issue names: no GPU, no sandbox (root in CI), and no background traffic
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
INSTALL_HINT = (
    "the browser tests need Debian's chromium and chromium-driver: "
    "`apt-get install -y chromium chromium-driver` (.ci/run does it)"
)


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{names[0]} not found: {INSTALL_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[dev]'", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1360,900")
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def platform(default_platform):
    return default_platform


class LiveServer:
    """An app under a real uvicorn on a loopback port, in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        from Prod.orchestrate.local_infra import free_port

        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, f"{self.url} did not start"
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
