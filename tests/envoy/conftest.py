"""Fixtures for the real-Envoy tests (helpers in envoy_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from envoy_harness import Backend


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.close()


