"""What the audit trail raises. Each error says whether a retry can help (`temporary`).

StoreError                      (reconciler.store)
├── StoreUnavailable            temporary: database busy, down or unreachable
└── AuditError
    ├── InvalidRecord           permanent: bad actor/kind/subject, data not a JSON object
    │   └── RecordTooLarge      permanent: data over the size cap
    ├── RecordNotFound          permanent: no record with that seq
    ├── AppendConflict          temporary: lost the race for the next seq too many times
    └── ChainBroken             permanent: verification found tampering or corruption
"""

from __future__ import annotations

from reconciler.errors import NotFound
from reconciler.store.errors import StoreError, StoreUnavailable

__all__ = [
    "AppendConflict",
    "AuditError",
    "ChainBroken",
    "InvalidRecord",
    "RecordNotFound",
    "RecordTooLarge",
    "StoreError",
    "StoreUnavailable",
]


class AuditError(StoreError):
    """Base of the audit trail's own errors."""


class InvalidRecord(AuditError, ValueError):
    """The record cannot be stored as given (the caller must change it)."""


class RecordTooLarge(InvalidRecord):
    """The record's data is larger than the cap once written as canonical JSON."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"audit data is {size} bytes of canonical JSON; the limit is {limit} "
            "(summarise it, or append with oversize='truncate')"
        )
        self.size = size
        self.limit = limit


class RecordNotFound(AuditError, NotFound):
    def __init__(self, seq: int) -> None:
        super().__init__(f"no audit record with seq {seq}")
        self.seq = seq


class AppendConflict(AuditError):
    """Another writer kept taking the next seq; the append was not stored. Temporary."""

    temporary = True


class ChainBroken(AuditError):
    """The stored chain does not verify. `broken_at` is the first seq that fails."""

    def __init__(self, broken_at: int, reason: str) -> None:
        super().__init__(f"audit chain broken at seq {broken_at}: {reason}")
        self.broken_at = broken_at
        self.reason = reason
