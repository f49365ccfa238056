"""The badge's background verification: incremental between full passes, full on demand."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.audit import AuditEntry, AuditLog
from reconciler.pages.chain_status import ChainStatus, badge_of
from reconciler.store import sqlite_url

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_pages_chain_status_incremental_then_full(tmp_path: Path) -> None:
    audit = AuditLog.open(sqlite_url(tmp_path))
    entries = [AuditEntry("tester", "probe.tick", f"s{i}", {"i": i}) for i in range(20)]
    audit.append_many(entries, now=T0)
    clock = [T0]
    chain = ChainStatus(audit, max_age=5, full_every=3600, clock=lambda: clock[0])
    assert badge_of(chain.verdict()).level == "unknown"
    chain.refresh(wait=True)
    first = chain.verdict()
    assert first.full and first.result is not None and first.result.verified_up_to == 20
    audit.append_many(entries[:5], now=T0)
    clock[0] += timedelta(seconds=1)
    chain.refresh_if_stale()  # fresh (1 s < 5 s): nothing recomputed
    assert chain.verdict().result == first.result
    clock[0] += timedelta(seconds=10)
    chain.refresh(wait=True)
    step = chain.verdict()
    assert not step.full and step.result is not None and step.result.verified_up_to == 25
    assert step.result.checked == 5  # only the new records
    # An edit of an old record is beyond an incremental pass; a full pass finds it.
    raw = sqlite3.connect(tmp_path / "meshcd.db")
    raw.execute("DROP TRIGGER audit_records_no_update")
    raw.execute("UPDATE audit_records SET subject = 'edited' WHERE seq = 7")
    raw.commit()
    raw.close()
    chain.refresh(wait=True)
    assert chain.verdict().result.ok  # type: ignore[union-attr]
    chain.refresh(full=True, wait=True)
    broken = chain.verdict()
    assert broken.result is not None and broken.result.broken_at == 7
    assert badge_of(broken).text == "Chain broken at seq 7"
    # Once broken, every later pass is a full one (it does not quietly resume past the break).
    chain.refresh(wait=True)
    assert chain.verdict().full and chain.verdict().result.broken_at == 7  # type: ignore[union-attr]
    audit.close()


def test_pages_chain_status_rewritten_resume_point_is_caught(tmp_path: Path) -> None:
    audit = AuditLog.open(sqlite_url(tmp_path))
    audit.append_many([AuditEntry("t", "probe.tick", "", {"i": i}) for i in range(10)], now=T0)
    chain = ChainStatus(audit, max_age=0, full_every=3600)
    chain.refresh(wait=True)
    # Rewrite the last verified record's hash: the incremental pass is anchored on it.
    raw = sqlite3.connect(tmp_path / "meshcd.db")
    raw.execute("DROP TRIGGER audit_records_no_update")
    raw.execute("UPDATE audit_records SET hash = ? WHERE seq = 10", ("f" * 64,))
    raw.commit()
    raw.close()
    chain.refresh(wait=True)
    verdict = chain.verdict()
    assert not verdict.full and verdict.result is not None and not verdict.result.ok
    assert verdict.result.broken_at == 10
    audit.close()
