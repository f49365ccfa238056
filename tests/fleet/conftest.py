"""Fixtures of the fleet tests: a CA, one database for audit, tokens and ledger."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from reconciler.store import sqlite_url  # noqa: E402
from reconciler.store.testing import (  # noqa: E402
    PostgresMissing,
    must_run_postgres_tests,
    postgres_database,
    postgres_schema,
)


@pytest.fixture(scope="session")
def fleet_postgres_db() -> Iterator[str]:
    try:
        with postgres_database() as url:
            yield url
    except PostgresMissing as exc:
        if must_run_postgres_tests():
            pytest.fail(f"CI is set, so PostgreSQL tests must run: {exc}")
        pytest.skip(f"PostgreSQL tests skipped: {exc}")


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "data")
        return
    with postgres_schema(request.getfixturevalue("fleet_postgres_db")) as url:
        yield url
