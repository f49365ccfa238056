"""Session fixtures: one real uvicorn server for all receiver tests, and an HTTP client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from webhook_server import Recorder, Server, build_app, running


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    recorders: dict[str, Recorder] = {}
    with running(build_app(recorders)) as port:
        yield Server(port, recorders)


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15.0) as c:
        yield c
