"""Issue #17 finding 10: a damaged database is found and named, a full one is a clear
temporary error. Real SQLite files, damaged by overwriting a page."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconciler.audit import AuditLog
from reconciler.store import StoreUnavailable, open_engine, sqlite_url
from reconciler.store.engine import classify_error
from reconciler.store.errors import StoreCorrupt, StoreFull
from reconciler.store.health import StoreHealth
from reconciler.store.integrity import check_integrity

MESHCD = str(Path(sys.executable).parent / "meshcd")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def damage_page_of(db: Path, table: str) -> None:
    """Overwrite the root page of `table` with garbage (SQLite closed, WAL checkpointed)."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                       (table,)).fetchone()[0]
    con.close()
    with db.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 64)


def audit_db_with_filler(tmp_path: Path) -> tuple[str, Path]:
    url = sqlite_url(tmp_path)
    log = AuditLog.open(url)
    for i in range(20):
        log.append("test", "thing.happened", f"s{i}", {"i": i}, now=NOW)
    log.close()
    db = tmp_path / "meshcd.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, blob BLOB)")
    con.executemany("INSERT INTO filler (blob) VALUES (?)", [(b"x" * 500,) for _ in range(400)])
    con.commit()
    con.close()
    return url, db


def test_verify_finds_a_damaged_page_the_chain_never_reads(tmp_path: Path) -> None:
    url, db = audit_db_with_filler(tmp_path)
    good = subprocess.run([MESHCD, "audit", "verify", "--store", url], capture_output=True,
                          text=True, timeout=60)
    assert good.returncode == 0 and "database integrity ok" in good.stdout, good
    damage_page_of(db, "filler")
    engine = open_engine(url)
    assert not check_integrity(engine).ok
    engine.dispose()
    bad = subprocess.run([MESHCD, "audit", "verify", "--store", url], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1, bad
    assert "database DAMAGED: the integrity check failed" in bad.stderr
    assert "intact" not in bad.stdout


def test_verify_of_a_damaged_audit_table_says_damaged(tmp_path: Path) -> None:
    url, db = audit_db_with_filler(tmp_path)
    damage_page_of(db, "audit_records")
    bad = subprocess.run([MESHCD, "audit", "verify", "--store", url], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1, bad
    assert "DAMAGED" in bad.stderr and "Traceback" not in bad.stderr


def test_integrity_of_a_sound_file_and_postgres_not_checked(tmp_path: Path) -> None:
    engine = open_engine(sqlite_url(tmp_path))
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (x)")
    result = check_integrity(engine)
    assert result.checked and result.ok and result.to_dict()["problems"] == []
    engine.dispose()


def _driver_error(message: str) -> sa.exc.DBAPIError:
    return sa.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError(message))


@pytest.mark.parametrize(("message", "kind"), [
    ("database or disk is full", StoreFull),
    ("database disk image is malformed", StoreCorrupt),
    ("database is locked", StoreUnavailable),
])
def test_driver_errors_are_classified(message: str, kind: type) -> None:
    got = classify_error(_driver_error(message))
    assert type(got) is kind
    assert isinstance(got, StoreUnavailable) == (kind is not StoreCorrupt)


def test_full_is_temporary_and_corrupt_is_not() -> None:
    assert StoreFull.temporary and not StoreCorrupt.temporary
    health = StoreHealth()
    health.failed("no space", 10.0)
    assert health.problems() == ["storage: no space"]
    health.wrote()
    assert health.problems() == []
    health.failed("damaged", 11.0, corrupt=True)
    health.wrote()
    assert health.problems() == ["storage: damaged"]  # a write does not mend a damaged file
