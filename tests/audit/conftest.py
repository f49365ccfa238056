"""Fixtures for the audit tests: an audit log per backend (tests/conftest.py gives the
URLs) and a fixed clock.

PostgreSQL tests skip (saying why) when no server is reachable, except under CI, where
they fail: see tests/support/postgres.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.audit import AuditLog

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)




@pytest.fixture
def log(db_url: str) -> Iterator[AuditLog]:
    audit = AuditLog.open(db_url)
    yield audit
    audit.close()


class Clock:
    """An injected clock that the test advances by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
