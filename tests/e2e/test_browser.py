"""examples/browser.html in headless Chromium, against a stack through NGINX.

The page itself, not its script under another runtime: it connects, echoes what is typed
and binary data, shows the close code, and reconnects by itself after NGINX restarts.
Chromium and chromedriver come from Debian (ci/setup.sh installs them); without them
the test fails in CI and skips elsewhere.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from stack.harness_config import current
from stack.waits import until

PAGE = Path(__file__).resolve().parents[2] / "examples" / "browser.html"
# Debian's names on PATH; elsewhere (GitHub's runners ship Google Chrome) set CHROMIUM_BINARY
# and CHROMEDRIVER (stack/harness_config.py).
CHROMIUM = (current().chromium_binary, current().chromedriver)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium driven by chromedriver, quit after the test."""
    binary, driver_path = found = [shutil.which(name) for name in CHROMIUM]
    if binary is None or driver_path is None:
        missing = [name for name, path in zip(CHROMIUM, found, strict=True) if path is None]
        current().unavailable(
            "a browser", f"{' and '.join(missing)} missing: run ci/setup.sh as root"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def status(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "status").text


def echoes(driver: webdriver.Chrome) -> list[str]:
    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#log li.echo")]


def test_page_echoes_text_and_binary_and_reconnects_after_nginx_restarts(
    make_stack, browser: webdriver.Chrome
) -> None:
    """Typed text and sent bytes come back; an NGINX restart shows its close code, then the
    page is connected again on its own and echoes."""
    stack = make_stack()
    browser.get(f"{PAGE.as_uri()}?url={stack.url}")
    connected = f"connected to {stack.url}"
    until(lambda: status(browser), "page connected", 30, accept=lambda s: s == connected)

    typed = browser.find_element(By.ID, "message")
    typed.send_keys("héllo ✓ <b>not markup</b>", Keys.ENTER)
    browser.execute_script("socket.send(new Uint8Array([0, 1, 2, 255]).buffer)")
    expected = ["héllo ✓ <b>not markup</b>", "(binary, 4 bytes)"]
    until(lambda: echoes(browser), "text and binary echoed", 15, accept=lambda e: e == expected)
    assert browser.find_elements(By.TAG_NAME, "b") == [], "an echo was rendered as markup"

    # Every status the page shows from now on, however briefly.
    browser.execute_script(
        "window.statuses = [];"
        "const line = document.getElementById('status');"
        "new MutationObserver(() => window.statuses.push(line.textContent))"
        ".observe(line, {childList: true, characterData: true, subtree: true});"
    )
    stack.nginx.restart()
    until(lambda: status(browser), "page reconnected", 60, accept=lambda s: s == connected)
    shown = browser.execute_script("return window.statuses")
    assert any(re.match(r"closed \(1\d{3}\b", line) for line in shown), shown
    typed.send_keys("after the restart", Keys.ENTER)
    until(
        lambda: echoes(browser),
        "echo after the restart",
        15,
        accept=lambda e: e == [*expected, "after the restart"],
    )
