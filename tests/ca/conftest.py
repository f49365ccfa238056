"""Fixtures for the CA tests: a fixed clock, a CA in tmp_path, and database backends.

PostgreSQL tests skip (saying why) when no server is reachable, except under CI, where
they fail: see reconciler.store.testing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.ca import CertificateAuthority
from reconciler.store import sqlite_url
from reconciler.store.testing import (
    PostgresMissing,
    must_run_postgres_tests,
    postgres_database,
    postgres_schema,
)

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
TRUST_DOMAIN = "mesh.example"


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "data", TRUST_DOMAIN, now=NOW)


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
