"""Errors of the persistent store, each saying whether retrying can help.

Every error the store raises derives from `StoreError`. Its `temporary` flag is the one
thing a caller needs to decide: retry later (the database is busy, restarting, unreachable)
or stop and tell a human (the data or the request is wrong and will stay wrong).
"""

from __future__ import annotations

from reconciler.errors import MeshcdError


class StoreError(MeshcdError):
    """Base of every store error. `temporary` is True when a retry may succeed."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or stayed locked past the busy timeout. Temporary."""

    temporary = True


class SchemaMismatch(StoreError):
    """The database holds tables this version does not understand. Permanent."""
