"""Errors of the persistent store, each saying whether retrying can help.

Every error the store raises derives from `StoreError` (a `reconciler.errors.MeshcdError`).
Its `temporary` flag is the one thing a caller needs to decide: retry later (the database is
busy, restarting, unreachable, its disk is full) or stop and tell a human (the data or the
request is wrong and will stay wrong).

    StoreError
    ├── StoreUnavailable   temporary: unreachable, locked past the busy timeout
    │   └── StoreFull      temporary: no space left for the database (or its journal)
    ├── StoreCorrupt       permanent: the database file is damaged (integrity check fails)
    └── SchemaMismatch     permanent: tables this version does not understand
"""

from __future__ import annotations

from reconciler.errors import MeshcdError


class StoreError(MeshcdError):
    """Base of every store error. `temporary` is True when a retry may succeed."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or stayed locked past the busy timeout. Temporary."""

    temporary = True


class StoreFull(StoreUnavailable):
    """The database's disk (or quota) is full: nothing was written; free space and retry."""


class StoreCorrupt(StoreError):
    """The database file is damaged. Permanent: restore it from a backup (docs/controller.md,
    "Storage problems"); `meshcd audit verify --store URL` runs the integrity check."""


class SchemaMismatch(StoreError):
    """The database holds tables this version does not understand. Permanent."""
