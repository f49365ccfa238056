"""Receiver behaviour around the hand-off: a failing on_update, a failing audit sink, large
bodies parsed off the event loop, and the pure core staying free of web imports."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from webhook_cases import CASES, encode, new_id
from webhook_server import running

from webhooks.errors import BodyTooLarge
from webhooks.model import DeliveryRecord, RefUpdate
from webhooks.receiver import THREAD_PARSE_BYTES, make_router, read_body
from webhooks.settings import ReceiverSettings

ROOT = Path(__file__).resolve().parents[2]
CASE = CASES["github"]


def _app(on_update: object, on_audit: object) -> FastAPI:
    settings = ReceiverSettings(
        watched_repo=CASE.watched_repo, watched_branch="main", secrets={"github": CASE.secret}
    )
    app = FastAPI()
    app.include_router(make_router(settings, on_update, on_audit, clock=lambda: 1234.5))  # type: ignore[arg-type]
    return app


def test_failed_handoff_is_503_and_the_retry_gets_through() -> None:
    calls: list[RefUpdate] = []
    audits: list[DeliveryRecord] = []

    def flaky(update: RefUpdate) -> None:
        calls.append(update)
        if len(calls) == 1:
            raise RuntimeError("controller not ready")

    body = encode(CASE.payload())
    headers = CASE.headers(body, new_id())
    with running(_app(flaky, audits.append)) as port, httpx.Client() as client:
        url = f"http://127.0.0.1:{port}/webhooks/github"
        first = client.post(url, content=body, headers=headers)
        retry = client.post(url, content=body, headers=headers)
        again = client.post(url, content=body, headers=headers)
    assert (first.status_code, first.json()["reason"]) == (503, "handoff_failed")
    assert retry.status_code == 202 and again.json()["result"] == "duplicate"
    assert len(calls) == 2
    assert [a.result for a in audits] == ["error", "accepted", "duplicate"]
    assert {a.time for a in audits} == {1234.5}  # time comes from the clock we passed


def test_a_failing_audit_sink_does_not_change_the_answer() -> None:
    updates: list[RefUpdate] = []

    def broken_audit(record: DeliveryRecord) -> None:
        raise OSError("disk full")

    body = encode(CASE.payload())
    with running(_app(updates.append, broken_audit)) as port:
        r = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/github",
            content=body,
            headers=CASE.headers(body, new_id()),
        )
    assert r.status_code == 202 and len(updates) == 1


def test_large_body_is_parsed_off_the_loop_and_accepted() -> None:
    updates: list[RefUpdate] = []
    payload = CASE.payload()
    commit = payload["commits"][0]
    payload["commits"] = [commit] * (THREAD_PARSE_BYTES // len(encode(commit)) + 50)
    body = encode(payload)
    assert THREAD_PARSE_BYTES < len(body) < 1024 * 1024
    delivery = new_id()
    with running(_app(updates.append, lambda record: None)) as port:
        r = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/github",
            content=body,
            headers=CASE.headers(body, delivery),
        )
    assert r.status_code == 202 and [u.delivery_id for u in updates] == [delivery]


def test_pure_core_imports_no_web_framework() -> None:
    code = (
        "import sys, webhooks, webhooks.sample, webhooks.decision, webhooks.settings;"
        "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'httpx') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_read_body_stops_pulling_as_soon_as_the_cap_is_passed() -> None:
    pulled = 0

    async def receive() -> dict[str, object]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # endless

    scope = {"type": "http", "method": "POST", "headers": [], "path": "/"}
    request = Request(scope, receive)
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_body(request, cap=10_000, timeout_s=5))
    assert pulled == 11  # 11,000 bytes > 10,000: refused at the first chunk over the cap
