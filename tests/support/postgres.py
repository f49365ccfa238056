"""Test support: a throwaway PostgreSQL database per test session, a fresh schema per test.

Used by the test suites of every table meshcd keeps, so they all isolate themselves the
same way and obey the same rule: on a machine without PostgreSQL the PostgreSQL tests skip
and say why, but when the `CI` environment variable is set they fail instead, so CI cannot
go green without having run them.

The server is taken from `MESHCD_TEST_POSTGRES_URL`
(default `postgresql+psycopg://postgres@127.0.0.1:5432/test`); that database is only used
to create and drop the throwaway one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class PostgresMissing(Exception):
    """PostgreSQL is not reachable; `str()` says where it was looked for and why it failed."""


def admin_url() -> str:
    return os.environ.get("MESHCD_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def must_run_postgres_tests() -> bool:
    """True in CI: missing PostgreSQL is then a failure, not a skip."""
    return bool(os.environ.get("CI"))


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it afterwards.

    Raises `PostgresMissing` when the server cannot be reached.
    """
    admin = make_url(admin_url())
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    name = f"meshcd_test_{secrets.token_hex(6)}"
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise PostgresMissing(
            f"PostgreSQL not reachable at {admin.render_as_string(hide_password=True)}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from exc
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


@contextmanager
def postgres_schema(database_url: str) -> Iterator[str]:
    """A fresh schema in `database_url`; yields a URL whose connections use only it."""
    engine = sa.create_engine(make_url(database_url), isolation_level="AUTOCOMMIT")
    schema = f"t_{secrets.token_hex(6)}"
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(database_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
