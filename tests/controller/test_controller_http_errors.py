"""The one place that maps the controller's errors to HTTP (reconciler/controller/http_errors.py),
over a real uvicorn on a kernel-picked port: each kind of domain error gets its status and the
API's `{"error": ...}` body; a route that raises no MeshcdError is not touched."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException

from reconciler.audit import ChainBroken, RecordNotFound
from reconciler.ca import TokenNotFound
from reconciler.controller.http_errors import RETRY_AFTER_S, install_error_handlers, status_for
from reconciler.controller.settings import SettingsError
from reconciler.errors import (
    MeshcdError,
    RollbackRefused,
    RollbackTargetNotFound,
    StartupError,
)
from reconciler.language import ConfigReadError
from reconciler.revisions import RevisionNotFound, RevisionStore
from reconciler.source import BranchMissing, CommitNotFound, RemoteUnreachable
from reconciler.store import StoreUnavailable, sqlite_url

CASES: dict[str, tuple[MeshcdError, int]] = {
    "record": (RecordNotFound(7), 404),
    "token": (TokenNotFound("jt-1"), 404),
    "commit": (CommitNotFound("no commit abc"), 404),
    "rollback-unknown": (RollbackTargetNotFound("no revision 99"), 404),
    "rollback": (RollbackRefused("revision 3 was never deployed"), 409),
    "settings": (SettingsError("api.port: 70000 is outside [0, 65535]"), 400),
    "config-read": (ConfigReadError("unknown revision 'nope'"), 400),
    "store-down": (StoreUnavailable("database is locked"), 503),
    "remote-down": (RemoteUnreachable("connection refused"), 503),
    "branch": (BranchMissing("no branch main yet"), 503),
    "chain": (ChainBroken(4, "hash mismatch"), 500),
    "startup": (StartupError("cannot start"), 500),
}


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    def raise_(name: str) -> dict[str, str]:
        raise CASES[name][0]

    @app.get("/http")
    def http() -> dict[str, str]:
        raise HTTPException(418, "a teapot")

    @app.get("/ok")
    def ok() -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(_app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_error_kind_gets_its_status_and_message(base_url: str, name: str) -> None:
    exc, status = CASES[name]
    r = httpx.get(f"{base_url}/raise/{name}", timeout=10)
    assert r.status_code == status, (name, r.status_code, r.text)
    # a temporary error says so: the client may try again, nothing was written
    assert r.json() == ({"error": str(exc), "temporary": True} if exc.temporary
                        else {"error": str(exc)})
    assert status_for(exc) == status
    if status == 503:
        assert r.headers["retry-after"] == str(RETRY_AFTER_S)
    else:
        assert "retry-after" not in r.headers


def test_other_routes_and_http_exceptions_are_untouched(base_url: str) -> None:
    assert httpx.get(f"{base_url}/ok", timeout=10).json() == {"ok": "yes"}
    teapot = httpx.get(f"{base_url}/http", timeout=10)
    assert teapot.status_code == 418 and teapot.json() == {"detail": "a teapot"}


def test_a_rollback_to_an_unknown_revision_is_both_not_found_and_a_refusal() -> None:
    # the pages catch RollbackRefused to show a message; the API answers it 404
    exc = RollbackTargetNotFound("no revision 99")
    assert isinstance(exc, RollbackRefused) and isinstance(exc, LookupError)
    assert status_for(exc) == 404


def test_an_unknown_revision_is_not_found_and_still_a_key_error(tmp_path: Path) -> None:
    store = RevisionStore.open(sqlite_url(tmp_path / "data"))
    try:
        with pytest.raises(RevisionNotFound) as caught:
            store.get(99)
    finally:
        store.close()
    assert isinstance(caught.value, KeyError)  # callers written before NotFound still work
    assert str(caught.value) == "no revision 99"
    assert status_for(caught.value) == 404
