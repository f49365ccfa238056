"""A real uvicorn serving the pages on 127.0.0.1, and a real headless Chromium.

Screenshots go to test-output/screenshots/ (gitignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from pages_fake import SqlPagesData
from pages_seed import canary_stages, make_app, seed_fleet, seed_revisions, series
from postgres import must_run_postgres_tests

from reconciler.audit import AuditLog
from reconciler.auth import ApiTokens, CreatedToken
from reconciler.pages import PagesSettings, Signals
from reconciler.store import open_engine, sqlite_url

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


@dataclass
class Site:
    url: str
    data: SqlPagesData
    audit: AuditLog
    tokens: ApiTokens
    admin: CreatedToken
    operator: CreatedToken
    viewer: CreatedToken
    db_path: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    engine = open_engine(sqlite_url(tmp_path / "data"))
    audit, tokens, data = AuditLog(engine), ApiTokens(engine), SqlPagesData(engine)
    now = datetime.now(UTC)
    seed_revisions(data, 30, now=now)
    seed_fleet(data, 250, now=now)
    data.set_last_fetch(now, True, "fetched main at " + "ab12cd34")
    data.start_rollout(30, canary_stages(250), now=now)
    data.add_points(30, series(90, bad_after=70))
    data.set_stage_signals(30, 0, Signals(0.021, 240.0, 6.5), Signals(0.003, 92.0, 0.4))
    admin = tokens.create("admin", "root", now=now)
    operator = tokens.create("operator", "olga", now=now)
    viewer = tokens.create("viewer", "vic", now=now)
    settings = PagesSettings(poll_seconds=0.5, verify_max_age=0.5, full_verify_every=0.0)
    app = make_app(data, audit, tokens, settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield Site(
        f"http://127.0.0.1:{port}",
        data,
        audit,
        tokens,
        admin,
        operator,
        viewer,
        tmp_path / "data" / "meshcd.db",
    )
    server.should_exit = True
    thread.join(timeout=10)
    engine.dispose()


@pytest.fixture(scope="session")
def browser_session() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver_path)):
        if must_run_postgres_tests():
            pytest.fail("CI is set, so the browser tests must run: chromium/chromedriver missing")
        pytest.skip("chromium and chromedriver are not installed")
    profile = tempfile.mkdtemp(prefix="meshcd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(browser_session: object) -> Iterator[object]:
    yield browser_session
    browser_session.delete_all_cookies()  # type: ignore[attr-defined]


@pytest.fixture
def shots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
