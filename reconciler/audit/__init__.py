"""The tamper-evident audit trail: append-only, hash-chained records in SQLite or PostgreSQL.

    log = AuditLog.open(sqlite_url(data_dir))            # or "postgresql+psycopg://..."
    log.append("admin-token:ab12", "revision.detected", "commit 3f2a...",
               {"author": "ana", "trigger": "webhook"}, now=clock())
    log.list(kind="revision.detected", limit=50)           # newest first
    result = log.verify()                                  # VerifyResult(ok, verified_up_to, ...)
    anchor = log.head()                                    # publish it; verify(anchor=...) later

The record format and the hash rule are in `record` and docs/audit.md; verification is the
pure `chain` module; storage is `log` (over `reconciler.store`).
"""

from __future__ import annotations

from reconciler.audit.chain import ChainVerifier, VerifyResult, verify_records
from reconciler.audit.errors import (
    AppendConflict,
    AuditError,
    ChainBroken,
    InvalidRecord,
    RecordNotFound,
    RecordTooLarge,
)
from reconciler.audit.log import MAX_PAGE, AuditLog, verify_jsonl
from reconciler.audit.record import (
    GENESIS_HASH,
    MAX_DATA_BYTES,
    Anchor,
    AuditEntry,
    AuditRecord,
    canonical_json,
    record_hash,
)
from reconciler.audit.redact import REDACTED, is_secret_key, redact_secrets
from reconciler.store.errors import StoreError, StoreUnavailable

__all__ = [
    "GENESIS_HASH",
    "MAX_DATA_BYTES",
    "MAX_PAGE",
    "REDACTED",
    "Anchor",
    "AppendConflict",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "ChainBroken",
    "ChainVerifier",
    "InvalidRecord",
    "RecordNotFound",
    "RecordTooLarge",
    "StoreError",
    "StoreUnavailable",
    "VerifyResult",
    "canonical_json",
    "is_secret_key",
    "record_hash",
    "redact_secrets",
    "verify_jsonl",
    "verify_records",
]
