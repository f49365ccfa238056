"""The persistent store shared by meshcd's tables: engine setup and error translation.

SQLite in the data dir by default; PostgreSQL (`postgresql+psycopg://...`) when several
controllers share state. See `engine` for the durability settings and `errors` for what
the store raises.
"""

from __future__ import annotations

from reconciler.store.engine import (
    is_postgresql,
    is_sqlite,
    open_engine,
    read_transaction,
    sqlite_url,
    translate_errors,
    write_transaction,
)
from reconciler.store.errors import SchemaMismatch, StoreError, StoreUnavailable
from reconciler.store.timefmt import format_instant, parse_instant

__all__ = [
    "SchemaMismatch",
    "StoreError",
    "StoreUnavailable",
    "format_instant",
    "is_postgresql",
    "is_sqlite",
    "open_engine",
    "parse_instant",
    "read_transaction",
    "sqlite_url",
    "translate_errors",
    "write_transaction",
]
