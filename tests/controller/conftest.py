from __future__ import annotations

from collections.abc import Iterator

import pytest
from controller_helpers import Processes


@pytest.fixture
def procs() -> Iterator[Processes]:
    p = Processes()
    try:
        yield p
    finally:
        p.stop_all()
