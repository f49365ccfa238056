"""The web pages mounted in a real `meshcd serve`: sign in over HTTP with the admin token
(sign-in form + login CSRF cookie), the Overview shows the deployed revision and the fleet
counts, the Audit page lists records; a viewer token from `meshcd token create` signs in and
is offered no action; the JSON API's admin-token check still holds.

With `deploy: {strategy: canary, preset: fast}`, in a real headless Chromium: a rollout shows
up on the Overview within 2 s of the API reporting it, pauses (no traffic: inconclusive), and
an operator aborts it from the page; the proxies go back, the revision is rejected, and the
controller's `rollout.operator` record and the pages' `action.abort` record name the operator.
Screenshots go to test-output/screenshots/."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chromium_driver import (
    SCREENSHOTS,
    chromium_session,
    click_and_load,
    page_text,
    sign_in_browser,
)
from controller_helpers import NS, ConfigRepo, Processes, Serve, free_static_port, mesh_files, until

from reconciler.auth import CSRF_FIELD

TOKEN_RX = re.compile(r"mat_[A-Za-z0-9_\-]+")


def sign_in(base: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=10)
    form = client.get("/signin")
    assert form.status_code == 200
    m = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', form.text)
    assert m, form.text
    done = client.post("/signin", data={CSRF_FIELD: m.group(1), "next": "/", "token": token})
    assert done.status_code == 303, (done.status_code, done.text)
    assert done.headers["location"] == "/"
    return client


def test_pages_in_serve(tmp_path: Path, procs: Processes) -> None:
    ports = {"web": [free_static_port()], "api": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(mesh_files(ports), "first config")
    serve = Serve(procs, tmp_path / "ctl", repo.url)
    serve.start()
    rev = serve.wait_status(c1, {"deployed"})
    pid = f"web.{NS}-0"
    serve.join_proxy(pid, "web", tmp_path / "proxy-web")
    until(lambda: serve.ledger().get(pid, {}).get("state") == "SYNCED", 60, "proxy synced")

    # without a session the pages send the browser to the sign-in form
    anon = httpx.get(serve.api + "/", timeout=10)
    assert anon.status_code == 303 and anon.headers["location"].startswith("/signin")

    admin = sign_in(serve.api, serve.token)
    page = admin.get("/")
    assert page.status_code == 200
    deployed = re.search(r'<p id="deployed-revision">(.*?)</p>', page.text, re.S)
    assert deployed and f"#{rev['id']}" in deployed.group(1) and c1[:12] in deployed.group(1)
    assert re.search(r'id="count-synced">1<', page.text)
    for state in ("stale", "nacked", "disconnected"):
        assert re.search(rf'id="count-{state}">0<', page.text)
    assert "No rollout in progress." in page.text
    assert 'href="/actions/rollback"' in page.text  # offered to the admin (operator+)

    audit = admin.get("/audit")
    assert audit.status_code == 200
    seqs = re.findall(r'<tr id="seq-(\d+)">', audit.text)
    assert len(seqs) >= 3
    for kind in ("controller.started", "deploy.finished", "session.signed_in"):
        assert f"<code>{kind}</code>" in audit.text

    # actions are refused honestly: nothing to act on without a canary engine
    confirm = admin.get("/actions/pause")
    csrf = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', confirm.text)
    assert csrf, confirm.text
    acted = admin.post("/actions/pause", data={CSRF_FIELD: csrf.group(1), "confirm": "yes"})
    assert acted.status_code == 409 and "no rollout in progress" in acted.text
    record = serve.audit("action.pause")[0]
    assert record["data"]["ok"] is False

    # a viewer from the CLI signs in and is offered no action
    made = serve.cli("token", "create", "--role", "viewer", "--name", "vera")
    assert made.returncode == 0, made.stderr
    found = TOKEN_RX.search(made.stdout)
    assert found, made.stdout
    viewer = sign_in(serve.api, found.group(0))
    page = viewer.get("/")
    assert page.status_code == 200 and c1[:12] in page.text
    assert "/actions/" not in page.text
    assert viewer.get("/audit").status_code == 200

    # the JSON API keeps its admin-token check
    assert serve.post("/api/refresh", {}, token="mat_not-a-token")[0] == 401
    assert serve.post("/api/refresh", {})[0] == 202
    admin.close()
    viewer.close()


# --- canary rollouts on the pages, in a real browser ---------------------------------------

@pytest.fixture
def chromium() -> Iterator[Any]:
    with chromium_session() as driver:
        yield driver


def test_pages_follow_a_canary_rollout_and_abort_it(tmp_path: Path, procs: Processes,
                                                    chromium: Any) -> None:
    from selenium.webdriver.common.by import By

    driver = chromium
    ports = {"web": [free_static_port(), free_static_port()], "api": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(mesh_files(ports), "first config")
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=0.3,
                  extra={"deploy": {"timeout_s": 20, "strategy": "canary", "preset": "fast"}})
    serve.start()
    serve.wait_status(c1, {"deployed"})
    ids = [f"web.{NS}-0", f"web.{NS}-1", f"api.{NS}-0"]
    for i, proxy_id in enumerate(ids):
        serve.join_proxy(proxy_id, proxy_id.split(".")[0], tmp_path / f"p{i}")

    def on(commit: str, which: list[str]) -> bool:
        ledger = serve.ledger()
        return all(ledger.get(p, {}).get("state") == "SYNCED"
                   and ledger[p].get("desiredRevision") == commit for p in which)

    try:
        until(lambda: on(c1, ids), 60, "every proxy on the first commit")
    except AssertionError as exc:  # e.g. a proxy that NACKed: the ledger says why
        raise AssertionError(f"{exc}; ledger: {serve.ledger()}") from None
    callers = [f"web.{NS}-0", f"web.{NS}-1"]
    before = {p: serve.ledger()[p]["ackedVersion"] for p in callers}

    made = serve.cli("token", "create", "--role", "operator", "--name", "olga")
    assert made.returncode == 0, made.stderr
    found = TOKEN_RX.search(made.stdout)
    assert found, made.stdout
    sign_in_browser(driver, serve.api, found.group(0))
    assert "No rollout in progress." in page_text(driver, "#rollout-state")

    # api's route changes: its callers (the web proxies) are rolled out in stages.
    c2 = repo.commit(mesh_files(ports, timeout="7s"), "longer timeout")

    def api_rollout() -> dict[str, Any] | None:
        got = serve.get("/api/rollout")["rollout"]
        return got if got is not None and got["commit"] == c2 else None

    until(api_rollout, 60, "the rollout in the API", 0.05)
    seen_by_api = time.monotonic()
    until(lambda: c2[:12] in page_text(driver, "#rollout-state"), 10, "the rollout on the page",
          0.05)
    lag = time.monotonic() - seen_by_api
    print(f"overview lag after the API: {lag:.2f} s")
    assert lag < 2.0, f"the overview showed the rollout {lag:.2f}s after the API"
    driver.save_screenshot(str(SCREENSHOTS / "serve-canary-overview.png"))
    rows = driver.find_elements(By.CSS_SELECTOR, "table.stages tbody tr")
    assert [r.find_element(By.CSS_SELECTOR, "th").text.split(". ", 1)[1] for r in rows] == [
        "1 proxy, bake 3s", "50%, bake 3s", "100%, bake 3s"]

    # No traffic, so the first stage is inconclusive: the rollout waits for an operator.
    until(lambda: "PAUSED" in page_text(driver, "#rollout-state"), 60, "the rollout paused")
    assert "Paused:" in driver.page_source
    # The actions follow without a reload: Resume is offered now.
    until(lambda: driver.find_elements(By.CSS_SELECTOR, "a.action-resume"), 5,
          "Resume offered on the page")
    driver.save_screenshot(str(SCREENSHOTS / "serve-canary-paused.png"))

    click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "a.action-abort"))
    assert "/actions/abort" in driver.current_url
    driver.find_element(By.ID, "reason").send_keys("no traffic to judge")
    driver.save_screenshot(str(SCREENSHOTS / "serve-canary-confirm-abort.png"))
    click_and_load(driver, driver.find_element(By.ID, "confirm"))
    assert "Done:" in driver.page_source, driver.page_source[:3000]

    rev = serve.wait_status(c2, {"rejected", "deployed"}, 60)
    assert rev["status"] == "rejected" and rev["outcome"] == "aborted", rev
    until(lambda: {p: serve.ledger()[p]["ackedVersion"] for p in callers} == before, 30,
          "the callers back on their old config")
    ops = [r for r in serve.audit("rollout.operator") if r["subject"] == c2]
    assert [r["data"]["action"] for r in ops] == ["abort"]
    assert ops[0]["actor"].startswith("token:olga#")
    asked = serve.audit("action.abort")
    assert len(asked) == 1 and asked[0]["actor"] == ops[0]["actor"]
    assert asked[0]["data"]["ok"] is True and asked[0]["data"]["via"] == "page"
    assert asked[0]["data"]["reason"] == "no traffic to judge"
    until(lambda: "No rollout in progress." in page_text(driver, "#rollout-state"), 10,
          "the overview without a rollout")

    # The revision page keeps the rollout: aborted at its first stage, what it touched.
    driver.get(f"{serve.api}/revisions/{rev['id']}")
    summary = page_text(driver, "#rollout-summary")
    assert "ABORTED" in summary, summary
    stages = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "ol.timeline li")]
    assert len(stages) == 3 and "aborted" in stages[0] and "not-run" in stages[2], stages
    assert "web.shop" in page_text(driver, "#h-blast + table")
    driver.execute_script("document.getElementById('h-rollout').scrollIntoView()")
    driver.save_screenshot(str(SCREENSHOTS / "serve-canary-revision.png"))

    # Roll back from the page to the first revision: the fleet is pinned there (banner) and
    # Resume unpins it.
    driver.get(serve.api + "/")
    click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "a.action-rollback"))
    from selenium.webdriver.support.ui import Select

    first = serve.revision_of(c1)
    assert first is not None
    Select(driver.find_element(By.ID, "target")).select_by_value(str(first["id"]))
    driver.find_element(By.ID, "reason").send_keys("back to the first config")
    driver.find_element(By.ID, "fast").click()
    click_and_load(driver, driver.find_element(By.ID, "confirm"))
    assert f"rolling back to revision {first['id']}" in driver.page_source, \
        driver.page_source[:3000]
    until(lambda: "pinned to revision" in page_text(driver, "p.banner"), 30, "the pinned banner")
    requested = serve.audit("rollback.requested")
    assert len(requested) == 1 and requested[0]["actor"] == ops[0]["actor"]
    assert requested[0]["data"]["fast"] is True
    assert requested[0]["data"]["reason"] == "back to the first config"
    pin = serve.get("/api/rollout")["pin"]
    assert pin["revision"] == first["id"] and pin["actor"] == ops[0]["actor"]
    driver.get(serve.api + "/")
    driver.save_screenshot(str(SCREENSHOTS / "serve-canary-pinned.png"))
    click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "a.action-resume"))
    click_and_load(driver, driver.find_element(By.ID, "confirm"))
    assert "unpinned" in driver.page_source, driver.page_source[:3000]
    assert serve.get("/api/rollout")["pin"] is None
    unpinned = serve.audit("fleet.unpinned")
    assert len(unpinned) == 1 and unpinned[0]["actor"] == ops[0]["actor"]
