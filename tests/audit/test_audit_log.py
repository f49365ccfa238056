"""AuditLog's API on SQLite and PostgreSQL: append, read, list, export, bad input."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from ports import refused_port

from reconciler.audit import (
    REDACTED,
    Anchor,
    AuditEntry,
    AuditLog,
    InvalidRecord,
    RecordNotFound,
    RecordTooLarge,
    StoreUnavailable,
    verify_jsonl,
)
from reconciler.store import open_engine, sqlite_url


def test_empty_log(log: AuditLog) -> None:
    assert log.count() == 0
    assert log.tail() is None
    assert log.head() is None
    assert log.list() == []
    result = log.verify()
    assert (result.ok, result.verified_up_to, result.checked) == (True, 0, 0)
    with pytest.raises(RecordNotFound):
        log.get(1)


def test_append_returns_what_is_stored(log: AuditLog, clock: Any) -> None:
    data = {
        "commit": "3f2a",
        "message": "route: canary 10% — ünïcode",
        "ratio": 0.1,
        "findings": [{"file": "a.yaml", "line": 3}],
        "none": None,
        "flag": False,
    }
    first = log.append("admin-token:1a2b", "revision.detected", "commit 3f2a", data, now=clock.now)
    assert first.seq == 1
    assert first.time == "2026-11-25T12:00:00.000000Z"
    assert log.get(1) == first
    assert log.tail() == first
    second = log.append("scheduler", "fetch.failed", "origin", now=clock.tick(2.5))
    assert second.prev_hash == first.hash
    assert second.data == {}
    assert second.time == "2026-11-25T12:00:02.500000Z"
    assert log.head() == Anchor(2, second.hash)
    assert log.count() == 2


def test_time_never_goes_backwards(log: AuditLog, clock: Any) -> None:
    # Another controller's clock may lag: its record takes the previous record's time.
    first = log.append("a", "x.y", "s", now=clock.tick(10))
    lagging = log.append("b", "x.y", "s", now=clock.now - timedelta(seconds=3))
    assert lagging.time == first.time
    later = log.append("c", "x.y", "s", now=clock.tick(1))
    assert later.timestamp == clock.now
    assert log.verify().ok


def test_secrets_never_reach_the_table(log: AuditLog, clock: Any) -> None:
    log.append(
        "cli", "token.issued", "svc", {"token": "mjt_SECRET", "token_id": "t1"}, now=clock.now
    )
    with log.engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT data FROM audit_records")).scalar_one()
    assert "mjt_SECRET" not in stored
    assert json.loads(stored) == {"token": REDACTED, "token_id": "t1"}


def test_bad_input_is_refused_and_nothing_is_stored(log: AuditLog, clock: Any) -> None:
    with pytest.raises(InvalidRecord):
        log.append("", "x.y", "s", {}, now=clock.now)
    with pytest.raises(InvalidRecord):
        log.append("a", "Bad Kind", "s", {}, now=clock.now)
    with pytest.raises(InvalidRecord):
        log.append("a", "x.y", "s", {"v": float("nan")}, now=clock.now)
    with pytest.raises(InvalidRecord, match="timezone"):
        log.append("a", "x.y", "s", {}, now=datetime(2026, 1, 1))
    with pytest.raises(RecordTooLarge):
        log.append("a", "x.y", "s", {"blob": "x" * 70_000}, now=clock.now)
    assert log.count() == 0


def test_oversized_data_can_be_stored_truncated(log: AuditLog, clock: Any) -> None:
    record = log.append("a", "x.y", "s", {"blob": "x" * 70_000}, now=clock.now, oversize="truncate")
    assert record.data["_truncated"] is True
    assert log.get(1) == record
    assert log.verify().ok


def test_append_many_is_all_or_nothing(log: AuditLog, clock: Any) -> None:
    log.append("a", "x.y", "s", {}, now=clock.now)
    bad = [AuditEntry("a", "x.y", "s", {}), AuditEntry("a", "x.y", "s", {"v": object()})]
    with pytest.raises(InvalidRecord):
        log.append_many(bad, now=clock.tick())
    assert log.count() == 1
    assert log.append_many([], now=clock.tick()) == []
    records = log.append_many(
        [AuditEntry("b", "x.z", f"s{i}", {"i": i}) for i in range(3)], now=clock.tick()
    )
    assert [r.seq for r in records] == [2, 3, 4]
    assert [log.get(s) for s in (2, 3, 4)] == records


@pytest.fixture
def filled(log: AuditLog, clock: Any) -> AuditLog:
    # 30 records: kinds alternate, actors cycle through three, subjects by tens.
    for i in range(1, 31):
        log.append(
            f"actor{i % 3}",
            "proxy.connect" if i % 2 else "proxy.disconnect",
            f"svc-{i // 10}",
            {"i": i},
            now=clock.tick(60),
        )
    return log


def seqs(records: list[Any]) -> list[int]:
    return [r.seq for r in records]


def test_list_is_newest_first_and_pages_by_seq(filled: AuditLog) -> None:
    page1 = filled.list(limit=12)
    assert seqs(page1) == list(range(30, 18, -1))
    page2 = filled.list(limit=12, before_seq=page1[-1].seq)
    page3 = filled.list(limit=12, before_seq=page2[-1].seq)
    assert seqs(page2) == list(range(18, 6, -1))
    assert seqs(page3) == list(range(6, 0, -1))
    assert filled.list(before_seq=1) == []


def test_list_filters(filled: AuditLog) -> None:
    assert seqs(filled.list(kind="proxy.connect", limit=5)) == [29, 27, 25, 23, 21]
    assert seqs(filled.list(actor="actor0", kind="proxy.disconnect")) == [30, 24, 18, 12, 6]
    assert seqs(filled.list(subject="svc-0")) == list(range(9, 0, -1))
    assert seqs(filled.list(subject="svc-1", before_seq=15, limit=2)) == [14, 13]
    assert filled.list(kind="no.such") == []
    start = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    # record i is at start + i minutes; since inclusive, until exclusive
    window = filled.list(since=start + timedelta(minutes=5), until=start + timedelta(minutes=8))
    assert seqs(window) == [7, 6, 5]
    # the same instant written in another zone selects the same records
    minus3 = datetime(2026, 11, 25, 9, 29, tzinfo=timezone(timedelta(hours=-3)))
    assert seqs(filled.list(since=minus3)) == [30, 29]


def test_list_refuses_bad_arguments(filled: AuditLog) -> None:
    for limit in (0, -1, 1001):
        with pytest.raises(InvalidRecord, match="limit"):
            filled.list(limit=limit)
    with pytest.raises(InvalidRecord, match="since"):
        filled.list(since=datetime(2026, 1, 1))


def test_export_writes_every_record_in_order(filled: AuditLog) -> None:
    out = io.StringIO()
    assert filled.export_jsonl(out, batch=7) == 30
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 31))
    assert json.loads(lines[0]) == filled.get(1).to_dict()
    assert verify_jsonl(iter(lines)).verified_up_to == 30
    part = io.StringIO()
    assert filled.export_jsonl(part, start=11, end=20) == 10
    assert json.loads(part.getvalue().splitlines()[0])["seq"] == 11


def test_iter_records_reads_in_batches(filled: AuditLog) -> None:
    assert [r.seq for r in filled.iter_records(batch=4)] == list(range(1, 31))
    assert [r.seq for r in filled.iter_records(start=28, batch=4)] == [28, 29, 30]
    assert [r.seq for r in filled.iter_records(start=3, end=5)] == [3, 4, 5]
    with pytest.raises(ValueError):
        list(filled.iter_records(batch=0))


def test_records_survive_reopening(db_url: str, clock: Any) -> None:
    first = AuditLog.open(db_url)
    written = first.append("a", "x.y", "s", {"k": [1, 2]}, now=clock.now)
    first.close()
    second = AuditLog.open(db_url)  # the schema already exists: opening is idempotent
    try:
        assert second.get(1) == written
        assert second.append("a", "x.y", "s", {}, now=clock.tick()).prev_hash == written.hash
        assert second.verify().ok
    finally:
        second.close()


def test_sqlite_connections_are_durable(tmp_path: Path) -> None:
    log = AuditLog.open(sqlite_url(tmp_path / "data"))
    try:
        with log.engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
        assert pragma == {
            "journal_mode": "wal",
            "synchronous": 2,
            "busy_timeout": 30_000,
            "foreign_keys": 1,
        }
        assert (tmp_path / "data" / "meshcd.db").exists()
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    finally:
        log.close()


def test_unsupported_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="file path"):
        open_engine("sqlite://")
    with pytest.raises(ValueError, match="file path"):
        open_engine("sqlite:///:memory:")
    with pytest.raises(ValueError, match="unsupported"):
        open_engine("mysql://u@h/db")


def test_an_unreachable_database_is_a_temporary_error() -> None:
    # A port held bound but not listening: the connection is refused at once.
    with refused_port() as port, pytest.raises(StoreUnavailable) as caught:
        AuditLog.open(f"postgresql+psycopg://postgres@127.0.0.1:{port}/meshcd?connect_timeout=2")
    assert caught.value.temporary


def test_an_unwritable_sqlite_location_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        AuditLog.open(sqlite_url(blocker / "data"))


def test_a_writer_locked_out_past_the_timeout_gets_a_temporary_error(
    db_url: str, clock: Any
) -> None:
    from reconciler.audit.schema import APPEND_LOCK_KEY
    from reconciler.store import write_transaction

    AuditLog.open(db_url).close()
    blocker = open_engine(db_url)
    impatient = AuditLog(open_engine(db_url, lock_timeout_ms=100))
    try:
        with write_transaction(blocker, lock_key=APPEND_LOCK_KEY):
            with pytest.raises(StoreUnavailable) as caught:
                impatient.append("a", "x.y", "s", {}, now=clock.now)
            assert caught.value.temporary
        # once the other writer is done, the same call succeeds
        assert impatient.append("a", "x.y", "s", {}, now=clock.now).seq == 1
    finally:
        impatient.close()
        blocker.dispose()


def test_sql_mistakes_are_not_reported_as_temporary(log: AuditLog) -> None:
    with log.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE audit_records")
    with pytest.raises(sa.exc.DBAPIError):  # a StoreUnavailable here would invite endless retries
        log.count()
    with pytest.raises(ValueError):
        open_engine("sqlite:///x.db", lock_timeout_ms=0)


@pytest.mark.parametrize(
    "filters",
    [
        {"kind": "proxy.connect"},
        {"actor": "actor1"},
        {"subject": "svc-2"},
        {"since": datetime(2026, 11, 25, 12, 10, tzinfo=UTC)},
        {"until": datetime(2026, 11, 25, 12, 10, tzinfo=UTC)},
        {"kind": "proxy.connect", "since": datetime(2026, 11, 25, 12, 10, tzinfo=UTC)},
    ],
    ids=lambda f: "+".join(f),
)
def test_filtered_lists_never_scan_the_table(
    tmp_path: Path, clock: Any, filters: dict[str, Any]
) -> None:
    # What keeps list() fast at a million records: every filtered query is an index search.
    log = AuditLog.open(sqlite_url(tmp_path / "data"))
    try:
        for i in range(1, 31):
            log.append(f"actor{i % 3}", "proxy.connect", f"svc-{i // 10}", {}, now=clock.tick(60))
        statements: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
            if "audit_records" in statement and statement.lstrip().upper().startswith("SELECT"):
                statements.append((statement, params))

        sa.event.listen(log.engine, "before_cursor_execute", capture)
        assert log.list(**filters)
        sa.event.remove(log.engine, "before_cursor_execute", capture)
        assert statements
        with log.engine.connect() as connection:
            for statement, params in statements:
                plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
                details = [str(row[-1]) for row in plan]
                assert any(d.startswith("SEARCH audit_records") for d in details), details
                assert not any(d.startswith("SCAN audit_records") for d in details), details
    finally:
        log.close()
