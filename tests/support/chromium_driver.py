"""A real headless Chromium (Selenium + Debian's chromedriver) for the tests that look at the
pages of a real `meshcd serve`, and small helpers to read pages that htmx keeps swapping.
Skips when Chromium is not installed, fails instead when CI is set (as tests/pages does)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


@contextmanager
def chromium_session() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(binary) and os.path.exists(driver_path)):
        if os.environ.get("CI"):
            pytest.fail("CI is set, so the browser tests must run: chromium/chromedriver missing")
        pytest.skip("chromium and chromedriver are not installed")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="meshcd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page_text(driver: Any, css: str) -> str:
    """An element's text ("" when absent); retried when htmx swapped it while reading."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(20):
        try:
            return str(driver.find_element(By.CSS_SELECTOR, css).text)
        except StaleElementReferenceException:
            continue
        except NoSuchElementException:
            return ""
    return ""


def click_and_load(driver: Any, element: Any) -> None:
    """Click something that loads a new page, and wait until it has."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def gone(_driver: Any) -> bool:
        # chromedriver sometimes reports a replaced page as "Node with given id does not
        # belong to the document" (an unknown error) rather than a stale element
        try:
            old.is_enabled()
        except WebDriverException:
            return True
        return False

    WebDriverWait(driver, 20).until(gone)


def sign_in_browser(driver: Any, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/signin")
    driver.find_element(By.ID, "token").send_keys(token)
    click_and_load(driver, driver.find_element(By.CSS_SELECTOR,
                                               "form.signin button[type=submit]"))
    assert driver.find_elements(By.CSS_SELECTOR, "form.whoami"), driver.page_source[:2000]
