"""Backends for the audit tests: a SQLite file in tmp_path, and a fresh PostgreSQL schema.

PostgreSQL tests skip (saying why) when no server is reachable, except under CI, where
they fail: see reconciler.store.testing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.audit import AuditLog
from reconciler.store import sqlite_url
from reconciler.store.testing import (
    PostgresMissing,
    must_run_postgres_tests,
    postgres_database,
    postgres_schema,
)

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    try:
        with postgres_database() as url:
            yield url
    except PostgresMissing as exc:
        if must_run_postgres_tests():
            pytest.fail(f"CI is set, so PostgreSQL tests must run: {exc}")
        pytest.skip(f"PostgreSQL tests skipped: {exc}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for an empty store, once per backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "data")
        return
    database = request.getfixturevalue("postgres_db")
    with postgres_schema(database) as url:
        yield url


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
