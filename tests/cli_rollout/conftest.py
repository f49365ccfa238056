from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_rollout_api import C1, C2, ApiServer, ApiState, summary
from controller_helpers import Processes


@pytest.fixture
def api() -> Iterator[ApiServer]:
    """Revision 1 (C1) deployed, revision 2 (C2) planned; nothing rolling out yet."""
    state = ApiState(revisions={
        1: summary(1, C1, "deployed", "startup", outcome=None, message="first"),
        2: summary(2, C2, "planned", "webhook", message="raise the cart timeout"),
    })
    server = ApiServer(state)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def procs() -> Iterator[Processes]:
    """Processes a test starts (`meshcd serve`, proxies); stopped at the end."""
    p = Processes()
    try:
        yield p
    finally:
        p.stop_all()
