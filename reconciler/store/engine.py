"""Opening the database: SQLite in the data dir by default, PostgreSQL by URL.

Every table meshcd keeps (audit records, join tokens, later revisions and the fleet ledger)
goes through an engine made here, so the durability settings are decided once:

- SQLite: WAL journal (readers never block the writer), `synchronous=FULL` (a committed
  audit record survives a power cut), a busy timeout so concurrent writers queue instead of
  failing, and foreign keys on. The pragmas are set on every new connection by a listener,
  because they are per-connection state.
- SQLite transactions: pysqlite's own implicit BEGIN is switched off and SQLAlchemy's
  `begin` event emits it instead, so a write transaction can say `BEGIN IMMEDIATE` and take
  the write lock before it reads (see `write_transaction`). Without that, two processes that
  both read the tail and then try to write would get SQLITE_BUSY, which no timeout cures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from reconciler.store.errors import StoreCorrupt, StoreFull, StoreUnavailable

DEFAULT_DB_FILE = "meshcd.db"
# How long a writer waits for another writer's lock before giving up (both backends).
LOCK_TIMEOUT_MS = 30_000
_WRITE_OPTION = "meshcd_write"
_LOCK_TIMEOUT_OPTION = "meshcd_lock_timeout_ms"


def sqlite_url(data_dir: str | os.PathLike[str], filename: str = DEFAULT_DB_FILE) -> str:
    """The SQLite URL of the default database file inside `data_dir`."""
    path = Path(data_dir).resolve() / filename
    return URL.create("sqlite", database=str(path)).render_as_string()


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def is_postgresql(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


def open_engine(url: str, *, echo: bool = False, lock_timeout_ms: int = LOCK_TIMEOUT_MS) -> Engine:
    """An engine for `url` (`sqlite:///path` or `postgresql+psycopg://...`).

    For a SQLite file the parent directory is created (mode 0700: it holds the audit
    trail and token hashes). In-memory SQLite is refused: each pooled connection would see
    a different empty database. `lock_timeout_ms` is how long a writer waits for another
    writer's lock (SQLite busy timeout; PostgreSQL `lock_timeout` in write transactions)
    before giving up with `StoreUnavailable`.
    """
    if lock_timeout_ms < 1:
        raise ValueError("lock_timeout_ms must be positive")
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise ValueError("SQLite needs a file path (in-memory databases are not shared)")
        Path(database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, echo=echo)
        _configure_sqlite(engine, lock_timeout_ms)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "psycopg2"):
            # Plain "postgresql://" would select psycopg2, which meshcd does not ship.
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
        return engine.execution_options(**{_LOCK_TIMEOUT_OPTION: lock_timeout_ms})
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's begin event (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextmanager
def write_transaction(engine: Engine, *, lock_key: int | None = None) -> Iterator[Connection]:
    """A transaction that holds the writer's lock from its first statement.

    SQLite: `BEGIN IMMEDIATE` takes the database write lock (waiting up to the busy timeout
    for other writers, in this or any other process). PostgreSQL: the engine's lock timeout
    applies to every lock the transaction waits for, and when `lock_key` is given a
    transaction-scoped advisory lock with that key is taken first, so writers of the same
    table queue across controllers; it is released at commit or rollback.
    Commits on success, rolls back on error; database errors come out translated.
    """
    with translate_errors(), engine.connect() as raw:
        connection = raw.execution_options(**{_WRITE_OPTION: True})
        with connection.begin():
            if is_postgresql(connection):
                timeout = int(connection.get_execution_options().get(_LOCK_TIMEOUT_OPTION, 0))
                if timeout:
                    connection.exec_driver_sql(f"SET LOCAL lock_timeout = {timeout}")
                if lock_key is not None:
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
            yield connection


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A short read-only transaction (one consistent snapshot on both backends)."""
    with translate_errors(), engine.connect() as connection, connection.begin():
        yield connection


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver errors that a retry can cure into `StoreUnavailable`.

    Lock timeouts, lost connections and refused connections are temporary. Other
    database errors (constraint violations, SQL errors) pass through unchanged for the
    caller to interpret.
    """
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise classify_error(exc) from exc


def classify_error(exc: sa.exc.DBAPIError) -> BaseException:
    """The store error a driver error means: `StoreFull` (no space), `StoreCorrupt` (a
    damaged file), `StoreUnavailable` (try again), or the error itself (a caller's mistake)."""
    message = str(getattr(exc, "orig", None) or exc).lower()
    if any(marker in message for marker in _FULL):
        return StoreFull(f"no space left for the database: {_first_line(exc)}; free some "
                         "space (nothing was written)")
    if any(marker in message for marker in _CORRUPT):
        return StoreCorrupt(f"the database is damaged: {_first_line(exc)}")
    if isinstance(exc, sa.exc.OperationalError):
        if _is_permanent_sqlite_error(exc):
            return exc
        return StoreUnavailable(f"database unavailable: {_first_line(exc)}")
    if exc.connection_invalidated:
        return StoreUnavailable(f"database connection lost: {_first_line(exc)}")
    return exc


# SQLite: SQLITE_FULL, SQLITE_CORRUPT, SQLITE_NOTADB; PostgreSQL: disk full (53100)
_FULL = ("database or disk is full", "no space left on device", "could not extend file",
         "disk quota exceeded")
_CORRUPT = ("database disk image is malformed", "file is not a database",
            "database corruption")


# sqlite3 reports SQL mistakes ("no such table", syntax errors) as OperationalError too;
# only these messages mean "try again later".
_SQLITE_TEMPORARY = ("locked", "busy", "unable to open", "disk i/o", "database or disk is full")


def _is_permanent_sqlite_error(exc: sa.exc.OperationalError) -> bool:
    if type(exc.orig).__module__.split(".")[0] != "sqlite3":
        return False
    message = str(exc.orig).lower()
    return not any(marker in message for marker in _SQLITE_TEMPORARY)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
