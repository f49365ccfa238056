"""The fleet's audit buffer decides by the error's `temporary` flag (reconciler.errors): a
store that is only busy keeps the records for the next flush; a permanent failure drops and
counts them. Real SQLite; the busy store is another writer holding the append lock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.audit import AuditLog, InvalidRecord
from reconciler.audit.schema import APPEND_LOCK_KEY
from reconciler.fleet.audit_buffer import AuditBuffer
from reconciler.store import open_engine, sqlite_url, write_transaction

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_a_busy_store_keeps_the_records_for_the_next_flush(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "data")
    AuditLog.open(url).close()
    blocker = open_engine(url)
    log = AuditLog(open_engine(url, lock_timeout_ms=100))
    buffer = AuditBuffer(log)
    try:
        for n in range(3):
            buffer.add("fleet", "proxy.connected", f"p{n}", {"n": n}, at=NOW)
        with write_transaction(blocker, lock_key=APPEND_LOCK_KEY):
            asyncio.run(buffer.flush(NOW))  # StoreUnavailable: temporary
        assert (len(buffer.pending), buffer.dropped, log.count()) == (3, 0, 0)
        asyncio.run(buffer.flush(NOW))
        assert (len(buffer.pending), buffer.dropped, log.count()) == (0, 0, 3)
    finally:
        log.close()
        blocker.dispose()


def test_a_permanent_failure_drops_and_counts_the_records(tmp_path: Path) -> None:
    log = AuditLog.open(sqlite_url(tmp_path / "data"))
    buffer = AuditBuffer(log)
    try:
        buffer.add("fleet", "proxy.connected", "p1", {"n": 1}, at=NOW)
        buffer.add("fleet", "", "p2", {"n": 2}, at=NOW)  # InvalidRecord: no kind
        with pytest.raises(InvalidRecord) as caught:  # what the flush will meet
            log.append_many([buffer.pending[1]], now=NOW)
        assert caught.value.temporary is False
        asyncio.run(buffer.flush(NOW))
        assert (len(buffer.pending), buffer.dropped) == (0, 2)
    finally:
        log.close()
