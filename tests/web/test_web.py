"""The web app in a real browser against the real platform (local mode, temporary ports): a chat
turn streams, shows cards and a chip; removing the chip changes the products; a purchase changes a
user's recommendations through fold-in; "train now" shows a new version; every service's /docs
and /redoc render offline. Each test saves a screenshot (``screenshots`` fixture)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.e2e  # starts the whole platform

WAIT_S = 90


def wait(browser, timeout: float = WAIT_S) -> WebDriverWait:
    return WebDriverWait(browser, timeout, poll_frequency=0.2)


def card_ids(browser, list_id: str) -> list[str]:
    # read in one script: the list may be re-rendered between two element lookups
    return browser.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} .product`)]"
        ".map(card => card.dataset.itemId)",
        list_id,
    )


def open_tab(browser, platform, tab: str) -> None:
    browser.get(f"{platform.web}/#{tab}")
    wait(browser).until(ec.visibility_of_element_located((By.ID, f"panel-{tab}")))


@pytest.fixture(scope="module")
def chat_turn(browser, platform, screenshots):
    """One chat turn with a price bound, watched as it streams."""
    open_tab(browser, platform, "assistant")
    # count the answer's text updates: a streamed answer arrives in several pieces
    browser.execute_script(
        """
        window.updates = 0;
        new MutationObserver(() => window.updates++).observe(
            document.getElementById('messages'),
            {childList: true, subtree: true, characterData: true});
        """
    )
    box = browser.find_element(By.ID, "chat-input")
    box.send_keys("wireless earbuds under $60", Keys.ENTER)
    done = ".msg.bot:not(.streaming) .by"
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, done)))
    browser.save_screenshot(str(screenshots / "chat.png"))
    return {
        "answer": browser.find_elements(By.CSS_SELECTOR, ".msg.bot")[-1].text,
        "updates": browser.execute_script("return window.updates"),
        "cards": card_ids(browser, "chat-products"),
    }


def test_a_chat_turn_streams_text_and_shows_cards_and_a_chip(browser, chat_turn):
    assert len(chat_turn["answer"]) > 20, chat_turn
    assert chat_turn["updates"] > 3, "the answer arrived in one piece, not streamed"
    assert chat_turn["cards"], "no product card"
    titles = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#chat-products h3")]
    prices = [
        float(p.text.lstrip("$"))
        for p in browser.find_elements(By.CSS_SELECTOR, "#chat-products .price")
    ]
    assert all(titles) and prices and max(prices) <= 60, (titles, prices)
    assert browser.find_elements(By.CSS_SELECTOR, "#chat-products .why"), "no 'why' sentence"
    chips = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#chips .chip")]
    assert any("under $60.00" in chip for chip in chips), chips


def test_removing_the_price_chip_changes_the_products(browser, chat_turn, screenshots):
    chip = browser.find_element(By.CSS_SELECTOR, '#chips .chip[data-filter="max_price"] button')
    assert chip.get_attribute("aria-label").startswith("Remove filter")
    chip.click()
    wait(browser).until(lambda b: card_ids(b, "chat-products") != chat_turn["cards"])
    assert not browser.find_elements(By.CSS_SELECTOR, '#chips .chip[data-filter="max_price"]')
    prices = [
        float(p.text.lstrip("$"))
        for p in browser.find_elements(By.CSS_SELECTOR, "#chat-products .price")
    ]
    assert max(prices) > 60, prices  # the bound is gone: dearer earbuds come back
    browser.save_screenshot(str(screenshots / "chat-chip-removed.png"))


def test_start_over_clears_the_conversation(browser, chat_turn):
    browser.find_element(By.ID, "start-over").click()
    wait(browser).until(lambda b: not card_ids(b, "chat-products"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#messages .msg")) == 1
    assert not browser.find_elements(By.CSS_SELECTOR, "#chips .chip")


def test_a_purchase_click_changes_the_recommendations_by_fold_in(browser, platform, screenshots):
    open_tab(browser, platform, "user")
    user = f"web-{uuid.uuid4().hex[:8]}"  # a new visitor: popular first, then fold-in
    field = browser.find_element(By.ID, "reco-user")
    field.clear()
    field.send_keys(user, Keys.ENTER)
    meta = browser.find_element(By.ID, "reco-meta")
    wait(browser).until(lambda b: meta.get_attribute("data-strategy"))
    before_strategy = meta.get_attribute("data-strategy")
    before = card_ids(browser, "reco-items")
    assert before and before_strategy == "popular", (before_strategy, before)
    assert "model " in meta.text
    first = browser.find_element(
        By.CSS_SELECTOR, '#reco-items .product button[data-event="purchase"]'
    )
    first.click()
    wait(browser).until(lambda b: meta.get_attribute("data-strategy") == "fold_in")
    after = card_ids(browser, "reco-items")
    assert after != before and before[0] not in after  # bought: no longer recommended
    assert browser.find_element(By.ID, "reco-change").is_displayed()
    wait(browser).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#history li:not(.empty)")) >= 2
    )
    # similar items on click
    browser.find_element(By.XPATH, '//*[@id="reco-items"]//button[text()="Similar"]').click()
    wait(browser).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#similar-items li:not(.empty)"))
    browser.save_screenshot(str(screenshots / "user.png"))
    # the stored list: saved from the model, one item removed (and never listed again)
    browser.find_element(By.ID, "list-create").click()
    rows = "#list-items li:not(.empty)"
    wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, rows)) >= 2)
    listed = len(browser.find_elements(By.CSS_SELECTOR, rows))
    removed = browser.find_element(By.CSS_SELECTOR, f"{rows} span").text.splitlines()[0]
    browser.find_element(By.CSS_SELECTOR, f"{rows} button").click()
    wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, rows)) == listed - 1)
    assert removed not in browser.find_element(By.ID, "list-items").text
    browser.find_element(By.ID, "list-reorder").click()
    wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, rows)) == listed - 1)
    browser.execute_script("document.getElementById('history').scrollIntoView()")
    browser.save_screenshot(str(screenshots / "user-lists.png"))
    served = httpx.get(f"{platform.reco}/api/v1/recommend/{user}", timeout=10).json()
    assert served["strategy"] == "fold_in"


def test_train_now_shows_a_new_version(browser, platform, screenshots):
    open_tab(browser, platform, "ops")
    active_row = "#versions tr[data-version] .badge"
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, active_row)))
    before = httpx.get(f"{platform.trainer}/api/v1/status", timeout=10).json()["active"]
    browser.find_element(By.ID, "train-now").click()
    message = browser.find_element(By.ID, "ops-message")
    wait(browser, 400).until(lambda b: "is active" in message.text or "failed" in message.text)
    assert "New version" in message.text, message.text
    after = httpx.get(f"{platform.trainer}/api/v1/status", timeout=10).json()["active"]
    assert after["version_id"] != before["version_id"]
    assert after["version_id"] in message.text
    wait(browser).until(
        lambda b: b.find_elements(
            By.CSS_SELECTOR, f'#versions tr[data-version="{after["version_id"]}"]'
        )
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#chart .bar-row")
    browser.save_screenshot(str(screenshots / "ops.png"))


@pytest.mark.parametrize("service", ["reco", "chat", "trainer"])
def test_docs_and_redoc_render_offline(browser, platform, screenshots, service):
    base = getattr(platform, service)
    browser.get(f"{base}/docs")
    wait(browser).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock .opblock-summary-path")) > 2
    )
    paths = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert any(path.startswith("/api/v1/") for path in paths), paths
    browser.save_screenshot(str(screenshots / f"docs-{service}.png"))
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources and all(url.startswith(base) for url in resources), resources
    browser.get(f"{base}/redoc")
    wait(browser).until(
        lambda b: (
            len(
                b.find_elements(
                    By.CSS_SELECTOR, "[data-section-id^='tag/'], [data-section-id^='operation/']"
                )
            )
            > 2
        )
    )


def test_phone_width_keeps_everything_reachable(browser, platform, screenshots):
    browser.set_window_size(390, 844)
    try:
        open_tab(browser, platform, "assistant")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
        tab = browser.find_element(By.ID, "tab-assistant")
        tab.send_keys(Keys.ARROW_RIGHT)  # keyboard: arrows move between tabs
        assert browser.find_element(By.ID, "panel-user").is_displayed()
        browser.find_element(By.ID, "tab-user").send_keys(Keys.ARROW_LEFT)
        browser.find_element(By.ID, "chat-input").send_keys("a yoga mat", Keys.ENTER)
        wait(browser).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, ".msg.bot:not(.streaming) .by"))
        )
        browser.save_screenshot(str(screenshots / "phone.png"))
    finally:
        browser.set_window_size(1360, 900)
