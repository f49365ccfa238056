"""Test harness: uvicorn in a thread on 127.0.0.1 (port picked by the kernel), and an app
with one receiver router per test case under `/<case name>`, plus one with no secrets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI
from webhook_cases import CASES

from webhooks.model import DeliveryRecord, RefUpdate
from webhooks.receiver import make_router
from webhooks.settings import ReceiverSettings

BODY_TIMEOUT_S = 1.0


@dataclass
class Recorder:
    updates: list[RefUpdate] = field(default_factory=list)
    audits: list[DeliveryRecord] = field(default_factory=list)

    def updates_for(self, delivery: str) -> list[RefUpdate]:
        return [u for u in list(self.updates) if u.delivery_id == delivery]

    def audits_for(self, delivery: str) -> list[DeliveryRecord]:
        return [a for a in list(self.audits) if a.delivery_id == delivery]


@dataclass
class Server:
    port: int
    recorders: dict[str, Recorder]

    def url(self, case: str, forge: str) -> str:
        return f"http://127.0.0.1:{self.port}/{case}/webhooks/{forge}"


def build_app(recorders: dict[str, Recorder]) -> FastAPI:
    app = FastAPI()
    for case in CASES.values():
        rec = recorders.setdefault(case.name, Recorder())
        settings = ReceiverSettings(
            watched_repo=case.watched_repo,
            watched_branch="main",
            secrets={case.forge: case.secret},
            body_timeout_s=BODY_TIMEOUT_S,
        )
        app.include_router(
            make_router(settings, rec.updates.append, rec.audits.append), prefix=f"/{case.name}"
        )
    rec = recorders.setdefault("unconfigured", Recorder())
    settings = ReceiverSettings(
        watched_repo="https://github.com/acme/mesh-config", watched_branch="main", secrets={}
    )
    app.include_router(
        make_router(settings, rec.updates.append, rec.audits.append), prefix="/unconfigured"
    )
    return app


@contextmanager
def running(app: FastAPI) -> Iterator[int]:
    """Serve `app` with uvicorn in a thread on 127.0.0.1:<kernel-picked port>; yield the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield port
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()
