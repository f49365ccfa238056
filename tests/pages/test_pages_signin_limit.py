"""Sign-in rate limiting: the pure limiter with injected time, and the pages over real HTTP
(10 failed sign-ins from one address, then 429 with Retry-After, audited once per burst)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from pages_fake import SqlPagesData
from pages_seed import make_app

from reconciler.audit import AuditLog
from reconciler.auth import CSRF_FIELD, ApiTokens
from reconciler.auth.ratelimit import SignInLimiter
from reconciler.pages import PagesSettings
from reconciler.store import open_engine, sqlite_url


def test_limiter_refuses_after_max_failures_until_the_oldest_expires() -> None:
    lim = SignInLimiter(max_failures=3, window_s=60.0)
    assert lim.refuse("a", 0.0) is None
    assert [lim.failed("a", t) for t in (0.0, 10.0, 20.0)] == [1, 2, 3]
    r = lim.refuse("a", 30.0)
    assert r is not None and r.retry_after == 30 and r.failures == 3 and r.first_of_burst
    r2 = lim.refuse("a", 45.5)
    assert r2 is not None and r2.retry_after == 15 and not r2.first_of_burst  # same burst
    assert lim.refuse("b", 45.5) is None  # per address
    assert lim.refuse("a", 60.0) is None  # the failure at 0 is a window old
    # One more failure refills the window: a new burst, reported again.
    lim.failed("a", 61.0)
    r3 = lim.refuse("a", 62.0)
    assert r3 is not None and r3.first_of_burst and r3.retry_after == 8  # 10 + 60 - 62


def test_limiter_retry_after_is_whole_seconds_at_least_one() -> None:
    lim = SignInLimiter(max_failures=1, window_s=0.5)
    lim.failed("a", 100.0)
    r = lim.refuse("a", 100.4)
    assert r is not None and r.retry_after == 1
    assert lim.refuse("a", 100.5) is None


def test_limiter_success_forgets_and_memory_is_bounded() -> None:
    lim = SignInLimiter(max_failures=2, window_s=60.0, max_clients=3)
    lim.failed("a", 0.0)
    lim.succeeded("a")
    lim.failed("a", 1.0)
    assert lim.refuse("a", 2.0) is None  # one failure since the success
    for i, c in enumerate(("b", "c", "d", "e")):
        lim.failed(c, 2.0 + i)
    assert len(lim) == 3  # "a" (least recently seen) was dropped
    lim.failed("e", 10.0)
    assert lim.refuse("e", 10.0) is not None
    # Expired entries are dropped when looked at.
    assert lim.refuse("e", 200.0) is None and len(lim) == 2
    with pytest.raises(ValueError):
        SignInLimiter(max_failures=0)


@pytest.fixture
def limited_site(tmp_path: Path) -> Iterator[tuple[str, AuditLog, str]]:
    engine = open_engine(sqlite_url(tmp_path / "data"))
    audit, tokens, data = AuditLog(engine), ApiTokens(engine), SqlPagesData(engine)
    good = tokens.create("viewer", "vic", now=datetime.now(UTC))
    app = make_app(data, audit, tokens, PagesSettings(signin_max_failures=10,
                                                       signin_window_s=3.0))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", audit, good.token
    finally:
        server.should_exit = True
        thread.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def attempt(client: httpx.Client, token: str) -> httpx.Response:
    form = client.get("/signin")
    csrf = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', form.text)
    assert csrf, form.text
    return client.post("/signin", data={CSRF_FIELD: csrf.group(1), "token": token, "next": "/"})


def test_pages_sign_in_is_rate_limited_per_address(
        limited_site: tuple[str, AuditLog, str]) -> None:
    url, audit, good = limited_site
    with httpx.Client(base_url=url, timeout=10) as client:
        codes = [attempt(client, f"mat_wrong{i}").status_code for i in range(10)]
        assert codes == [401] * 10
        refused = attempt(client, good)  # even the right token: the address must wait
        assert refused.status_code == 429
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 3
        assert "Too many failed sign-ins" in refused.text
        assert attempt(client, "mat_wrong-again").status_code == 429
        assert len(audit.list(kind="session.rate_limited", limit=10)) == 1  # once per burst
        record = audit.list(kind="session.rate_limited", limit=1)[0]
        assert record.data["client"] == "127.0.0.1" and record.data["failures"] == 10
        assert len(audit.list(kind="session.refused", limit=100)) == 10
        time.sleep(retry + 0.2)
        ok = attempt(client, good)
        assert ok.status_code == 303 and ok.headers["location"] == "/"
