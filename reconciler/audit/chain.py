"""Verifying a hash chain. Pure: records in, verdict out; fed in batches, memory bounded.

For each record, in seq order, `ChainVerifier.feed` checks:

1. seq is the next one expected (a jump means records were deleted; a repeat or a step
   back means records were inserted or reordered);
2. prev_hash equals the hash of the record before it (or 64 zeros for seq 1), which catches
   insertions, deletions followed by renumbering, and reordering;
3. hash equals the recomputed hash of its own fields, which catches any edited field.

The first failure stops verification: everything after it chains from a broken link.
What cannot be detected from the records alone: records cut off the end (the chain that
remains is valid). `verified_up_to` says how far it goes; compare it with an anchor
(`Anchor(seq, hash)`) recorded elsewhere to catch truncation or a rewritten tail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.audit.errors import ChainBroken
from reconciler.audit.record import GENESIS_HASH, Anchor, AuditRecord


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """`ok`: every record checked links and hashes correctly (and the anchor, if any, holds).

    `verified_up_to`: the last seq known good (0 if none). `broken_at`: the first seq that
    failed, or None. `reason`: a sentence for a human, or None when ok. `checked`: records
    examined in this run.
    """

    ok: bool
    verified_up_to: int
    broken_at: int | None
    reason: str | None
    checked: int = 0
    head: Anchor | None = None

    def raise_if_broken(self) -> None:
        if not self.ok:
            raise ChainBroken(self.broken_at or self.verified_up_to + 1, self.reason or "")


class ChainVerifier:
    """Feed records in seq order (any batch size); ask `result()` at any point."""

    def __init__(self, *, start: int = 1, prev_hash: str = GENESIS_HASH) -> None:
        self._expected_seq = start
        self._prev_hash = prev_hash
        self._verified_up_to = start - 1
        self._last: Anchor | None = None
        self._checked = 0
        self._broken_at: int | None = None
        self._reason: str | None = None

    @property
    def broken(self) -> bool:
        return self._broken_at is not None

    def feed(self, records: Iterable[AuditRecord]) -> bool:
        """Check `records`; False as soon as the chain breaks (later records are ignored)."""
        for record in records:
            if self._broken_at is not None:
                return False
            self._checked += 1
            failure = self._check(record)
            if failure is not None:
                self._broken_at, self._reason = failure
                return False
            self._prev_hash = record.hash
            self._verified_up_to = record.seq
            self._last = Anchor(record.seq, record.hash)
            self._expected_seq = record.seq + 1
        return self._broken_at is None

    def _check(self, record: AuditRecord) -> tuple[int, str] | None:
        expected = self._expected_seq
        if record.seq > expected:
            missing = (
                f"record {expected} is missing"
                if record.seq == expected + 1
                else f"records {expected}..{record.seq - 1} are missing"
            )
            return expected, f"{missing} (found seq {record.seq} next): deleted records"
        if record.seq < expected:
            return record.seq, (
                f"seq {record.seq} appears after seq {expected - 1}: records inserted or reordered"
            )
        if record.prev_hash != self._prev_hash:
            before = (
                "the genesis value" if record.seq == 1 else f"the hash of record {record.seq - 1}"
            )
            return record.seq, (
                f"prev_hash of record {record.seq} does not match {before}: "
                "a record was inserted, removed or reordered, or the one before was rewritten"
            )
        if record.computed_hash() != record.hash:
            return record.seq, f"record {record.seq} does not match its hash: it was edited"
        return None

    def check_anchor(self, anchor: Anchor) -> None:
        """After feeding everything: does the chain still reach `anchor` unchanged?"""
        if self._broken_at is not None:
            return
        if anchor.seq > self._verified_up_to:
            self._broken_at = self._verified_up_to + 1
            self._reason = (
                f"the anchor is at seq {anchor.seq} but the chain ends at {self._verified_up_to}: "
                "records were cut off the end"
            )

    def note_anchor_hash(self, anchor: Anchor, stored_hash: str | None) -> None:
        """Compare the anchor with the stored (and verified) hash of its record."""
        if self._broken_at is not None:
            return
        if stored_hash is None:
            self.check_anchor(anchor)
        elif stored_hash != anchor.hash:
            self._broken_at = anchor.seq
            self._reason = (
                f"record {anchor.seq} has hash {stored_hash[:12]}... but the anchor says "
                f"{anchor.hash[:12]}...: the chain was rewritten up to or past the anchor"
            )

    def result(self) -> VerifyResult:
        return VerifyResult(
            ok=self._broken_at is None,
            verified_up_to=self._verified_up_to,
            broken_at=self._broken_at,
            reason=self._reason,
            checked=self._checked,
            head=self._last,
        )


def verify_records(records: Iterable[AuditRecord], *, anchor: Anchor | None = None) -> VerifyResult:
    """Verify a whole chain from seq 1 (e.g. read back from an export).

    With `anchor`, also require the chain to reach it with the same hash.
    """
    verifier = ChainVerifier()
    anchor_hash: str | None = None
    for record in records:
        if not verifier.feed([record]):
            break
        if anchor is not None and record.seq == anchor.seq:
            anchor_hash = record.hash
    if anchor is not None:
        verifier.note_anchor_hash(anchor, anchor_hash)
    return verifier.result()
