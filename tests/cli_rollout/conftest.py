from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cli_rollout_api import C1, C2, ApiServer, ApiState, summary


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
