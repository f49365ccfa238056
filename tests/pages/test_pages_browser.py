"""The pages in a real headless Chromium against a real uvicorn (tests/pages/conftest.py)."""

from __future__ import annotations

import sqlite3
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from reconciler.pages import Action

Site = Any  # the `site` fixture of conftest.py


def wait(driver: Any, seconds: float = 20) -> WebDriverWait:  # type: ignore[type-arg]
    # htmx swaps the live parts in place: an element read mid-swap is stale, so retry.
    return WebDriverWait(
        driver,
        seconds,
        poll_frequency=0.1,
        ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
    )


def sign_in(driver: Any, site: Site, token: str) -> None:
    driver.get(site.url + "/signin")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    go(driver, driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]"))
    wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.whoami")))


def replaced(old: Any) -> Any:
    """A wait condition: `old` is no longer in the page. Chromedriver sometimes says so with
    "Node with given id does not belong to the document" (an unknown error) instead of a
    stale-element error: both mean the page was replaced."""

    def gone(_driver: Any) -> bool:
        try:
            old.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one
            return True
        return False

    return gone


def go(driver: Any, element: Any) -> None:
    """Click something that loads a new page, and wait until it has."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 10, poll_frequency=0.1).until(replaced(old))


def text(driver: Any, css: str) -> str:
    """An element's text; retried when a live (htmx) swap replaced it while reading."""
    for _ in range(20):
        try:
            return str(driver.find_element(By.CSS_SELECTOR, css).text)
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept being replaced")


def test_pages_sign_in_walk_every_page(site: Site, browser: Any, shots: Path) -> None:
    driver = browser
    driver.get(site.url + "/fleet")
    assert "/signin" in driver.current_url  # not signed in: sent to the form
    driver.save_screenshot(str(shots / "signin.png"))
    driver.find_element(By.ID, "token").send_keys("mat_not-a-real-token")
    go(driver, driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]"))
    assert "not valid" in text(driver, "p.error"), driver.page_source[:3000]

    sign_in(driver, site, site.admin.token)
    cookie = driver.get_cookie("meshcd_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert "Rollout" in driver.page_source and "RUNNING" in text(driver, "#rollout-state")
    assert "2.10% / 0.30%" in text(driver, "table.stages tbody tr")  # canary vs baseline
    assert text(driver, "#count-synced").isdigit()
    driver.save_screenshot(str(shots / "overview.png"))

    go(driver, driver.find_element(By.LINK_TEXT, "Revisions"))
    assert driver.find_elements(By.CSS_SELECTOR, "tbody tr")
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "outcome")).select_by_visible_text("invalid")
    go(driver, driver.find_element(By.CSS_SELECTOR, "form.filters button"))
    outcomes = {e.text for e in driver.find_elements(By.CSS_SELECTOR, "tbody .status")}
    assert outcomes == {"invalid"}
    driver.save_screenshot(str(shots / "revisions.png"))

    driver.get(site.url + "/revisions/30")
    assert (
        "routes/web.yaml" in driver.page_source or "policies/retries.yaml:7" in driver.page_source
    )
    charts = driver.find_elements(By.CSS_SELECTOR, "figure.chart svg polyline.canary")
    assert len(charts) == 3
    assert "Blast radius" in driver.page_source and "now allowed" in driver.page_source
    driver.save_screenshot(str(shots / "revision.png"))
    driver.execute_script("document.getElementById('h-rollout').scrollIntoView()")
    driver.save_screenshot(str(shots / "revision-rollout.png"))

    go(driver, driver.find_element(By.LINK_TEXT, "Fleet"))
    Select(driver.find_element(By.ID, "state")).select_by_visible_text("NACKED")
    go(driver, driver.find_element(By.CSS_SELECTOR, "form.filters button"))
    states = {e.text for e in driver.find_elements(By.CSS_SELECTOR, "tbody .state")}
    assert states == {"NACKED"}
    go(driver, driver.find_element(By.LINK_TEXT, "Service"))  # sort by service
    assert "aria-sort" in driver.find_element(
        By.XPATH, "//th[a[starts-with(., 'Service')]]"
    ).get_attribute("outerHTML")
    driver.save_screenshot(str(shots / "fleet.png"))

    go(driver, driver.find_element(By.LINK_TEXT, "Audit log"))
    wait(driver).until(lambda d: "verified up to seq" in text(d, "#chain-badge"))
    assert "session.signed_in" in driver.page_source
    driver.save_screenshot(str(shots / "audit.png"))

    go(driver, driver.find_element(By.LINK_TEXT, "Tokens"))
    assert "olga" in driver.page_source and site.operator.token not in driver.page_source
    driver.find_element(By.ID, "name").send_keys("ci-bot")
    go(driver, driver.find_element(By.CSS_SELECTOR, "form.filters button"))
    new_token = driver.find_element(By.ID, "new-token").get_attribute("value")
    assert new_token.startswith("mat_") and site.tokens.authenticate(new_token) is not None
    driver.save_screenshot(str(shots / "tokens.png"))


def test_pages_overview_follows_a_rollout_live(site: Site, browser: Any) -> None:
    driver = browser
    sign_in(driver, site, site.viewer.token)
    assert "stage 1 of 4" in text(driver, "#rollout-state")
    # The test drives the rollout; the page (htmx polling) must show it without a reload.
    site.data.act(Action.PROMOTE, actor="test", target_revision=None)
    wait(driver, 5).until(lambda d: "stage 2 of 4" in text(d, "#rollout-state"))
    site.data.act(Action.PAUSE, actor="test", target_revision=None)
    wait(driver, 5).until(lambda d: "PAUSED" in text(d, "#rollout-state"))
    assert "Paused:" in driver.page_source


def test_pages_actions_follow_the_rollout_without_a_reload(site: Site, browser: Any) -> None:
    driver = browser
    sign_in(driver, site, site.operator.token)
    assert driver.find_elements(By.CSS_SELECTOR, "a.action-pause")
    pause = driver.find_element(By.CSS_SELECTOR, "a.action-pause")
    time.sleep(1.5)  # a poll or two with nothing changed: the same element, not a swap
    assert pause.is_displayed()  # raises StaleElementReferenceException if it was replaced
    site.data.act(Action.PAUSE, actor="test", target_revision=None)
    wait(driver, 5).until(lambda d: d.find_elements(By.CSS_SELECTOR, "a.action-resume"))
    assert not driver.find_elements(By.CSS_SELECTOR, "a.action-pause")


def test_pages_operator_aborts_and_the_audit_record_appears(
    site: Site, browser: Any, shots: Path
) -> None:
    driver = browser
    sign_in(driver, site, site.operator.token)
    go(driver, driver.find_element(By.CSS_SELECTOR, "a.action-promote"))
    go(driver, driver.find_element(By.ID, "confirm"))
    assert "promoted to stage 2" in text(driver, "p.notice")
    go(driver, driver.find_element(By.CSS_SELECTOR, "a.action-abort"))
    driver.save_screenshot(str(shots / "confirm-abort.png"))
    go(driver, driver.find_element(By.ID, "confirm"))
    assert "aborted" in text(driver, "p.notice")
    assert "No rollout in progress" in text(driver, "#rollout-state")
    driver.get(site.url + "/audit?kind=action.abort")
    row = text(driver, "table.audit tbody tr")
    assert "token:olga#" in row and "action.abort" in row and "revision 30" in row
    promote = site.audit.list(kind="action.promote")
    assert len(promote) == 1 and promote[0].actor.startswith("token:olga#")


def test_pages_actions_work_from_the_keyboard(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver = browser
    sign_in(driver, site, site.operator.token)

    def focused() -> str:
        return str(
            driver.execute_script(
                "const e = document.activeElement; return (e.id || '') + '|' + e.textContent.trim();"
            )
        )

    def tab_to(label: str) -> None:
        # Press Tab (as a user would) until the element with this text or id has the focus.
        for _ in range(60):
            if label in focused().split("|"):
                return
            ActionChains(driver).send_keys(Keys.TAB).perform()
        raise AssertionError(f"never reached {label!r} with Tab; focus is on {focused()!r}")

    tab_to("Pause…")
    old = driver.find_element(By.TAG_NAME, "html")
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    WebDriverWait(driver, 20, poll_frequency=0.1).until(replaced(old))
    assert "/actions/pause" in driver.current_url
    tab_to("confirm")
    old = driver.find_element(By.TAG_NAME, "html")
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    WebDriverWait(driver, 20, poll_frequency=0.1).until(replaced(old))
    assert "rollout paused" in text(driver, "p.notice")
    # The strict CSP holds: nothing on the pages needed an inline script or style.
    violations = [
        e for e in driver.get_log("browser") if "Content Security Policy" in e.get("message", "")
    ]
    assert violations == []


def test_pages_viewer_cannot_act(site: Site, browser: Any) -> None:
    driver = browser
    sign_in(driver, site, site.viewer.token)
    assert not driver.find_elements(By.CSS_SELECTOR, "a.action-abort")
    assert not driver.find_elements(By.LINK_TEXT, "Tokens")
    driver.get(site.url + "/actions/abort")
    assert "needs the operator role" in driver.page_source
    # Even with its own valid CSRF token, a viewer's POST is refused.
    driver.get(site.url + "/")
    csrf = driver.find_element(By.CSS_SELECTOR, "form.whoami input[name=csrf_token]").get_attribute(
        "value"
    )
    status = driver.execute_script(
        """
        const r = await fetch('/actions/abort', {method: 'POST',
          headers: {'content-type': 'application/x-www-form-urlencoded'},
          body: 'confirm=yes&csrf_token=' + encodeURIComponent(arguments[0])});
        return r.status;""",
        csrf,
    )
    assert status == 403
    assert (
        site.data.overview().rollout is not None and site.data.overview().rollout.state == "running"
    )
    assert site.audit.list(kind="action.abort") == []


def test_pages_csrf_less_posts_are_refused(site: Site, browser: Any) -> None:
    driver = browser
    sign_in(driver, site, site.operator.token)
    statuses = driver.execute_script(
        """
        const post = (body) => fetch('/actions/abort', {method: 'POST',
          headers: {'content-type': 'application/x-www-form-urlencoded'}, body}).then(r => r.status);
        return [await post('confirm=yes'), await post('confirm=yes&csrf_token=forged')];"""
    )
    assert statuses == [403, 403]
    assert site.data.overview().rollout is not None
    # Without the session cookie at all (another client): sent to sign in, nothing done.
    request = urllib.request.Request(
        site.url + "/actions/abort", data=b"confirm=yes", method="POST"
    )
    try:
        with urllib.request.urlopen(request) as answer:
            assert "/signin" in answer.url
    except urllib.error.HTTPError as err:
        assert err.code in (303, 401, 403)
    assert site.audit.list(kind="action.abort") == []


def test_pages_tampered_audit_row_turns_the_badge_broken(
    site: Site, browser: Any, shots: Path
) -> None:
    driver = browser
    sign_in(driver, site, site.viewer.token)
    driver.get(site.url + "/audit")
    wait(driver).until(lambda d: "verified up to seq" in text(d, "#chain-badge"))
    for i in range(5):
        site.audit.append(
            "scheduler", "probe.tick", f"revision {i}", {"i": i}, now=datetime.now(UTC)
        )
    target = site.audit.list(kind="probe.tick")[2].seq  # one in the middle of the chain
    driver.get(site.url + "/audit")
    wait(driver).until(lambda d: f"verified up to seq {target + 2}" in text(d, "#chain-badge"))
    raw = sqlite3.connect(site.db_path)
    raw.execute("DROP TRIGGER audit_records_no_update")
    raw.execute("UPDATE audit_records SET actor = 'someone-else' WHERE seq = ?", (target,))
    raw.commit()
    raw.close()
    wait(driver, 10).until(lambda d: f"broken at seq {target}" in text(d, "#chain-badge"))
    assert "badge-broken" in driver.find_element(By.ID, "chain-badge").get_attribute("class")
    driver.save_screenshot(str(shots / "audit-broken.png"))
