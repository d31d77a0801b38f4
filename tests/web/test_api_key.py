"""With an API key set, the page asks for it once, keeps it in the tab (sessionStorage), sends it
as X-API-Key through the proxy, and never has it in its source. The real trainer API (with a key)
on the running platform's stores, and the web app in front of it."""

from __future__ import annotations

import secrets

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from config import Settings
from tests.web.conftest import LiveServer

pytestmark = pytest.mark.e2e  # needs the running platform's stores


@pytest.fixture(scope="module")
def keyed(platform):
    from Prod.als_trainer.main import create_app as trainer_app
    from Prod.web.main import create_app as web_app

    key = secrets.token_urlsafe(24)
    env = platform.env
    stores = dict(
        environment="test",
        database_url=env["DATABASE_URL"],
        redis_url=env["REDIS_URL"],
        chroma_host=env["CHROMA_HOST"],
        chroma_port=int(env["CHROMA_PORT"]),
        reranker_model="",
    )
    with LiveServer(trainer_app(Settings(**stores, api_key=key), schedule=False)) as trainer:
        web_settings = Settings(
            **stores,
            web_trainer_url=trainer.url,
            web_reco_url=platform.reco,
            web_chat_url=platform.chat,
        )
        with LiveServer(web_app(web_settings)) as web:
            yield {"key": key, "web": web.url, "trainer": trainer.url}


def test_the_page_asks_for_the_key_once_and_sends_it(browser, keyed, screenshots):
    assert httpx.get(f"{keyed['trainer']}/api/v1/status", timeout=10).status_code == 401
    browser.get(f"{keyed['web']}/#ops")
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    dialog = wait.until(ec.visibility_of_element_located((By.ID, "key-dialog")))
    browser.save_screenshot(str(screenshots / "api-key.png"))
    assert keyed["key"] not in browser.page_source
    field = browser.find_element(By.ID, "key-input")
    assert field.get_attribute("type") == "password"
    field.send_keys(keyed["key"], Keys.ENTER)
    wait.until(lambda b: not dialog.is_displayed())
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#versions tr[data-version]"))
    stored = browser.execute_script("return sessionStorage.getItem('reco.apiKey')")
    assert stored == keyed["key"]
    # once: a refresh of the operations view does not ask again
    browser.find_element(By.ID, "refresh-ops").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#versions tr[data-version]"))
    assert not dialog.is_displayed()
    assert keyed["key"] not in browser.page_source
