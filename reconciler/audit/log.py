"""`AuditLog`: the audit trail over SQLite or PostgreSQL (SQLAlchemy Core).

How appends stay one chain with several writers (threads, processes, controllers):
each append is one transaction that first takes the writers' lock, then reads the tail,
then inserts the next records. SQLite's lock is the database write lock (`BEGIN IMMEDIATE`,
shared by every process using the file); PostgreSQL's is a transaction-scoped advisory lock
(`pg_advisory_xact_lock`, shared by every controller using the database). Writers queue
rather than race. Under the lock, seq being the primary key is the backstop: should anything
write without the lock, the second insert of a seq fails and the append retries from the new
tail, so the chain never forks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from reconciler.audit.chain import ChainVerifier, VerifyResult
from reconciler.audit.errors import AppendConflict, ChainBroken, InvalidRecord, RecordNotFound
from reconciler.audit.record import (
    GENESIS_HASH,
    Anchor,
    AuditEntry,
    AuditRecord,
    Oversize,
    canonical_json,
    link_entries,
    prepare_entries,
)
from reconciler.audit.schema import APPEND_LOCK_KEY, audit_records, create_audit_schema
from reconciler.store.engine import open_engine, read_transaction, write_transaction
from reconciler.store.timefmt import format_instant

MAX_PAGE = 1000
_APPEND_ATTEMPTS = 5
_T = audit_records
_COLUMNS = (
    _T.c.seq,
    _T.c.time,
    _T.c.actor,
    _T.c.kind,
    _T.c.subject,
    _T.c.data,
    _T.c.prev_hash,
    _T.c.hash,
)


class AuditLog:
    """The append-only, hash-chained audit trail.

    Build it with `AuditLog.open(url)` (creates the schema) or `AuditLog(engine)` to share an
    engine with other tables. Every method is safe to call from several threads.
    """

    def __init__(self, engine: Engine, *, create_schema: bool = True) -> None:
        self.engine = engine
        if create_schema:
            with write_transaction(engine, lock_key=APPEND_LOCK_KEY) as connection:
                create_audit_schema(connection)

    @classmethod
    def open(cls, url: str) -> AuditLog:
        """Open (and create if needed) the audit trail at a database URL."""
        return cls(open_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    # -- writing ---------------------------------------------------------------------------

    def append(
        self,
        actor: str,
        kind: str,
        subject: str,
        data: dict[str, Any] | None = None,
        *,
        now: datetime,
        redact: bool = True,
        oversize: Oversize = "reject",
    ) -> AuditRecord:
        """Append one record and return it as stored.

        `now` must be timezone-aware. Secret-named keys in `data` are redacted unless
        `redact=False`. Data over 64 KiB of canonical JSON raises `RecordTooLarge`, or is
        replaced by a truncation marker with `oversize="truncate"`.
        """
        entry = AuditEntry(actor=actor, kind=kind, subject=subject, data=data or {})
        return self.append_many([entry], now=now, redact=redact, oversize=oversize)[0]

    def append_many(
        self,
        entries: Sequence[AuditEntry],
        *,
        now: datetime,
        redact: bool = True,
        oversize: Oversize = "reject",
    ) -> list[AuditRecord]:
        """Append a burst of records in one transaction (all stored, or none)."""
        if not entries:
            return []
        # Validate and serialise before taking the lock: bad input never holds up writers.
        prepared = prepare_entries(entries, now=now, redact=redact, oversize=oversize)
        for attempt in range(_APPEND_ATTEMPTS):
            try:
                with write_transaction(self.engine, lock_key=APPEND_LOCK_KEY) as connection:
                    tail = _tail_link(connection)
                    seq, prev, tail_time = tail if tail else (0, GENESIS_HASH, None)
                    records = link_entries(
                        prepared, first_seq=seq + 1, prev_hash=prev, not_before=tail_time
                    )
                    rows = [_to_row(r, p.data_json) for r, p in zip(records, prepared, strict=True)]
                    connection.execute(_T.insert(), rows)
                return records
            except sa.exc.IntegrityError as exc:
                if attempt == _APPEND_ATTEMPTS - 1:
                    raise AppendConflict(
                        f"another writer took the next seq {_APPEND_ATTEMPTS} times; not stored"
                    ) from exc
        raise AssertionError("unreachable")

    # -- reading ---------------------------------------------------------------------------

    def get(self, seq: int) -> AuditRecord:
        """The record with this seq, or `RecordNotFound`.

        Reads raise `ChainBroken` for a row whose data is no longer a JSON object.
        """
        with read_transaction(self.engine) as connection:
            row = connection.execute(sa.select(*_COLUMNS).where(_T.c.seq == seq)).first()
        if row is None:
            raise RecordNotFound(seq)
        return _from_row(row)

    def tail(self) -> AuditRecord | None:
        """The newest record, or None when the trail is empty."""
        with read_transaction(self.engine) as connection:
            row = connection.execute(
                sa.select(*_COLUMNS).order_by(_T.c.seq.desc()).limit(1)
            ).first()
        return _from_row(row) if row is not None else None

    def head(self) -> Anchor | None:
        """(seq, hash) of the newest record: publish or pin it to make truncation detectable."""
        with read_transaction(self.engine) as connection:
            return _head(connection)

    def count(self) -> int:
        with read_transaction(self.engine) as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(_T)).scalar_one())

    def list(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records newest first, filtered; page on with `before_seq=<last seq returned>`.

        `since` is inclusive, `until` exclusive (record time, UTC). `limit` is 1..1000.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRecord(f"limit must be between 1 and {MAX_PAGE}")
        query = sa.select(*_COLUMNS)
        if kind is not None:
            query = query.where(_T.c.kind == kind)
        if actor is not None:
            query = query.where(_T.c.actor == actor)
        if subject is not None:
            query = query.where(_T.c.subject == subject)
        if before_seq is not None:
            query = query.where(_T.c.seq < before_seq)
        since_text = _instant(since, "since") if since is not None else None
        until_text = _instant(until, "until") if until is not None else None
        with read_transaction(self.engine) as connection:
            # Times never decrease along the chain, so a time window is a seq range: find its
            # ends on the (time, seq) index, then walk seq newest first as for any page.
            if since_text is not None:
                first = connection.execute(
                    sa.select(_T.c.seq)
                    .where(_T.c.time >= since_text)
                    .order_by(_T.c.time, _T.c.seq)
                    .limit(1)
                ).scalar_one_or_none()
                if first is None:
                    return []
                query = query.where(_T.c.seq >= first, _T.c.time >= since_text)
            if until_text is not None:
                last = connection.execute(
                    sa.select(_T.c.seq)
                    .where(_T.c.time < until_text)
                    .order_by(_T.c.time.desc(), _T.c.seq.desc())
                    .limit(1)
                ).scalar_one_or_none()
                if last is None:
                    return []
                query = query.where(_T.c.seq <= last, _T.c.time < until_text)
            query = query.order_by(_T.c.seq.desc()).limit(limit)
            return [_from_row(row) for row in connection.execute(query)]

    def iter_records(
        self, *, start: int = 1, end: int | None = None, batch: int = 10_000
    ) -> Iterator[AuditRecord]:
        """Records oldest first from `start` to `end` (inclusive), read `batch` at a time.

        Each batch is its own short read, so a long walk never pins an old snapshot.
        """
        if batch < 1:
            raise ValueError("batch must be positive")
        next_seq = start
        while end is None or next_seq <= end:
            query = sa.select(*_COLUMNS).where(_T.c.seq >= next_seq)
            if end is not None:
                query = query.where(_T.c.seq <= end)
            query = query.order_by(_T.c.seq).limit(batch)
            with read_transaction(self.engine) as connection:
                rows = connection.execute(query).all()
            if not rows:
                return
            for row in rows:
                yield _from_row(row)
            next_seq = int(rows[-1].seq) + 1
            if len(rows) < batch:
                return

    # -- verifying and exporting -----------------------------------------------------------

    def verify(
        self, start: int = 1, batch: int = 10_000, *, anchor: Anchor | None = None
    ) -> VerifyResult:
        """Recompute the chain from `start`, reading `batch` records at a time.

        From `start > 1`, the stored hash of record `start - 1` is taken as given (verify
        from an anchor you trust). With `anchor`, the chain must also still reach the
        anchor's seq with the anchor's hash: that catches a truncated or rewritten tail,
        which the records alone cannot show.
        """
        if start < 1:
            raise ValueError("start must be at least 1")
        prev_hash = GENESIS_HASH
        if start > 1:
            with read_transaction(self.engine) as connection:
                prev = connection.execute(
                    sa.select(_T.c.hash).where(_T.c.seq == start - 1)
                ).scalar_one_or_none()
            if prev is None:
                return VerifyResult(
                    False,
                    start - 1,
                    start - 1,
                    f"record {start - 1} (the start's predecessor) is missing",
                )
            prev_hash = str(prev)
        verifier = ChainVerifier(start=start, prev_hash=prev_hash)
        anchor_hash: str | None = None
        if anchor is not None and anchor.seq < start:
            # Before the verified range: compare with the stored hash as it is.
            with read_transaction(self.engine) as connection:
                stored = connection.execute(
                    sa.select(_T.c.hash).where(_T.c.seq == anchor.seq)
                ).scalar_one_or_none()
            anchor_hash = str(stored) if stored is not None else "(missing)"
        try:
            for record in self.iter_records(start=start, batch=batch):
                if not verifier.feed([record]):
                    break
                if anchor is not None and record.seq == anchor.seq:
                    anchor_hash = record.hash
        except ChainBroken as exc:
            return _corrupt_result(verifier, exc)
        if anchor is not None:
            verifier.note_anchor_hash(anchor, anchor_hash)
        return verifier.result()

    def export_jsonl(
        self, fp: IO[str], *, start: int = 1, end: int | None = None, batch: int = 10_000
    ) -> int:
        """Write records `start..end` oldest first, one canonical JSON object per line.

        The output verifies on its own (`verify_jsonl`) and with the recipe in
        docs/audit.md. Returns the number of records written.
        """
        written = 0
        for record in self.iter_records(start=start, end=end, batch=batch):
            fp.write(canonical_json(record.to_dict()).decode("utf-8"))
            fp.write("\n")
            written += 1
        return written


def _corrupt_result(verifier: ChainVerifier, exc: ChainBroken) -> VerifyResult:
    done = verifier.result()
    return VerifyResult(
        False, done.verified_up_to, exc.broken_at, exc.reason, done.checked + 1, done.head
    )


def _tail_link(connection: Connection) -> tuple[int, str, str] | None:
    """(seq, hash, time) of the newest record: what the next record links to."""
    row = connection.execute(
        sa.select(_T.c.seq, _T.c.hash, _T.c.time).order_by(_T.c.seq.desc()).limit(1)
    ).first()
    return (int(row.seq), str(row.hash), str(row.time)) if row is not None else None


def _head(connection: Connection) -> Anchor | None:
    row = connection.execute(
        sa.select(_T.c.seq, _T.c.hash).order_by(_T.c.seq.desc()).limit(1)
    ).first()
    return Anchor(int(row.seq), str(row.hash)) if row is not None else None


def _to_row(record: AuditRecord, data_json: str) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "time": record.time,
        "actor": record.actor,
        "kind": record.kind,
        "subject": record.subject,
        "data": data_json,  # canonical JSON of record.data, made once in prepare_entries
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def _from_row(row: Any) -> AuditRecord:
    # Unpacked by position (the order of _COLUMNS): much cheaper than attribute access on a
    # Row, which matters when verify() reads a million of them.
    seq, time, actor, kind, subject, data_text, prev_hash, digest = row
    seq = int(seq)
    try:
        data = json.loads(data_text)
    except (TypeError, ValueError) as exc:
        raise ChainBroken(seq, f"record {seq}'s data is not valid JSON: it was edited") from exc
    if not isinstance(data, dict):
        raise ChainBroken(seq, f"record {seq}'s data is not a JSON object: it was edited")
    return AuditRecord(
        seq, str(time), str(actor), str(kind), str(subject), data, str(prev_hash), str(digest)
    )


def _instant(value: datetime, name: str) -> str:
    try:
        return format_instant(value)
    except ValueError as exc:
        raise InvalidRecord(f"{name}: {exc}") from exc


def verify_jsonl(lines: Iterator[str] | IO[str], *, anchor: Anchor | None = None) -> VerifyResult:
    """Verify an export (`export_jsonl` output) from seq 1, without a database."""
    verifier = ChainVerifier()
    anchor_hash: str | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = AuditRecord.from_dict(json.loads(line))
        except (ValueError, InvalidRecord) as exc:
            done = verifier.result()
            return VerifyResult(
                False,
                done.verified_up_to,
                done.verified_up_to + 1,
                f"line {number} is not an audit record: {exc}",
                done.checked,
                done.head,
            )
        if not verifier.feed([record]):
            break
        if anchor is not None and record.seq == anchor.seq:
            anchor_hash = record.hash
    if anchor is not None:
        verifier.note_anchor_hash(anchor, anchor_hash)
    return verifier.result()


__all__ = ["AuditLog", "verify_jsonl"]
