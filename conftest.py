"""Fixtures shared by every test folder (tests/): a database URL per backend.

PostgreSQL tests skip (saying why) when no server is reachable, except under CI, where
they fail: see tests/support/postgres.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres import (
    PostgresMissing,
    must_run_postgres_tests,
    postgres_database,
    postgres_schema,
)

from reconciler.store import sqlite_url


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    """A fresh PostgreSQL database for the session (each test takes a schema of it)."""
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
    with postgres_schema(request.getfixturevalue("postgres_db")) as url:
        yield url
