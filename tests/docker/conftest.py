"""The browser fixtures of tests/web (Debian's chromium through Selenium), reused by the Docker
check's page test: one driver per module, screenshots under ``<basetemp>/screenshots``."""

from tests.web.conftest import browser, screenshots  # noqa: F401
