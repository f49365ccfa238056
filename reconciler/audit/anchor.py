"""Signed checkpoints of the audit chain's head, kept outside the database (docs/audit.md,
"Anchors").

A checkpoint says "the chain had record `seq` with hash `hash` at `time`", signed with the
controller's Ed25519 anchor key, which lives in the controller's data dir and never in the
database. Someone who can write the database can cut off its newest records and leave a
valid, shorter chain; a checkpoint kept elsewhere (the controller's anchor file, the state
dirs of the proxies) shows it: the chain no longer reaches `seq`, or reaches it with
another hash.

Pure: making and checking checkpoints, and judging a chain against them. The key, the
anchor file and the clock are the caller's (see `anchor_files`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from proxy_runtime.protocol import fleet as fleet_protocol
from reconciler.audit.errors import AuditError
from reconciler.audit.record import Anchor, canonical_json
from reconciler.store.timefmt import format_instant

PURPOSE = "meshcd.audit.checkpoint.v1"
_HEX = frozenset("0123456789abcdef")


class CheckpointError(AuditError, ValueError):
    """A checkpoint document that is malformed (not one this version made). Permanent."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    time: str  # UTC, the audit record format: 2026-11-25T17:38:01.123456Z
    key_id: str
    signature: str  # base64 of the Ed25519 signature over `signed_bytes`

    @property
    def anchor(self) -> Anchor:
        return Anchor(self.seq, self.hash)

    def signed_bytes(self) -> bytes:
        return signed_bytes(self.seq, self.hash, self.time, self.key_id)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "time": self.time, "keyId": self.key_id,
                "signature": self.signature}

    @classmethod
    def from_dict(cls, doc: Any) -> Checkpoint:
        """Parse `to_dict` output (also the fleet protocol's checkpoint fields)."""
        if not isinstance(doc, dict):
            raise CheckpointError("a checkpoint must be a JSON object")
        seq, digest, time = doc.get("seq"), doc.get("hash"), doc.get("time")
        key_id, signature = doc.get("keyId"), doc.get("signature")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise CheckpointError("checkpoint seq must be a positive integer")
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
            raise CheckpointError("checkpoint hash must be 64 lowercase hex digits")
        for name, value in (("time", time), ("keyId", key_id), ("signature", signature)):
            if not isinstance(value, str) or not value or len(value) > 256:
                raise CheckpointError(f"checkpoint {name} must be a non-empty string")
        assert isinstance(time, str) and isinstance(key_id, str) and isinstance(signature, str)
        return cls(seq, digest, time, key_id, signature)


def to_wire(cp: Checkpoint) -> fleet_protocol.Checkpoint:
    """The fleet protocol's checkpoint message (what proxies keep)."""
    return fleet_protocol.Checkpoint(cp.seq, cp.hash, cp.time, cp.key_id, cp.signature)


def from_wire(msg: fleet_protocol.Checkpoint) -> Checkpoint:
    return Checkpoint(msg.seq, msg.hash, msg.time, msg.key_id, msg.signature)


def signed_bytes(seq: int, digest: str, time: str, key_id: str) -> bytes:
    """What the signature covers: canonical JSON naming the purpose, so a signature made for
    something else can never pass as a checkpoint."""
    return canonical_json({"purpose": PURPOSE, "seq": seq, "hash": digest, "time": time,
                           "keyId": key_id})


def key_id(public_key: Ed25519PublicKey) -> str:
    """`ed25519:` + the first 16 hex digits of SHA-256 of the raw public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def make_checkpoint(key: Ed25519PrivateKey, head: Anchor, now: datetime) -> Checkpoint:
    """Sign `head` as of `now` (an aware datetime: the caller's clock)."""
    kid = key_id(key.public_key())
    time = format_instant(now)
    signature = key.sign(signed_bytes(head.seq, head.hash, time, kid))
    return Checkpoint(head.seq, head.hash, time, kid, base64.b64encode(signature).decode("ascii"))


def signature_ok(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    """True if `checkpoint` was signed by `public_key`'s private key, unchanged."""
    if checkpoint.key_id != key_id(public_key):
        return False
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        public_key.verify(signature, checkpoint.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True


def newest(checkpoints: Iterable[Checkpoint], keep: int) -> list[Checkpoint]:
    """The `keep` checkpoints of highest seq (one per seq and hash), oldest first."""
    unique = {(c.seq, c.hash): c for c in sorted(checkpoints, key=lambda c: (c.seq, c.time))}
    return sorted(unique.values(), key=lambda c: (c.seq, c.time))[-keep:] if keep > 0 else []


Status = Literal["proven", "truncated", "rewritten", "unanchored", "unchecked"]


@dataclass(frozen=True, slots=True)
class AnchorReport:
    """How a chain stands against the checkpoints.

    - `proven`: every usable checkpoint matches; the newest (`checkpoint`) proves that no
      record up to its seq was removed or changed.
    - `truncated`: the chain ends at `chain_head` but `checkpoint` was signed for a later
      seq: records `missing[0]..missing[1]` were removed.
    - `rewritten`: the chain reaches `checkpoint.seq` with another hash.
    - `unanchored`: no usable checkpoint (nothing to prove completeness with).
    - `unchecked`: the chain itself is broken before the checkpoints; fix that first.
    `ignored`: checkpoints whose signature did not verify (or by an unknown key).
    """

    status: Status
    chain_head: int
    checkpoint: Checkpoint | None
    missing: tuple[int, int] | None
    ignored: int
    message: str

    @property
    def ok(self) -> bool:
        return self.status in ("proven", "unanchored")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "ok": self.ok, "chainHead": self.chain_head,
                "checkpoint": None if self.checkpoint is None else self.checkpoint.to_dict(),
                "missing": None if self.missing is None else list(self.missing),
                "ignored": self.ignored, "message": self.message}


def judge(
    *,
    chain_ok: bool,
    verified_up_to: int,
    hash_at: Callable[[int], str | None],
    checkpoints: Iterable[Checkpoint],
    public_keys: Iterable[Ed25519PublicKey],
) -> AnchorReport:
    """Check a chain (already verified by `AuditLog.verify`: `chain_ok`, `verified_up_to`)
    against every checkpoint whose signature verifies with one of `public_keys`.

    `hash_at(seq)` is the stored hash of record `seq` (None if there is no such record); it
    is only asked for seqs up to `verified_up_to`. Every checkpoint must match, not only
    the newest: a truncation stays visible after new records reuse the removed seqs.
    """
    keys = list(public_keys)
    good: list[Checkpoint] = []
    ignored = 0
    for cp in checkpoints:
        if any(signature_ok(cp, k) for k in keys):
            good.append(cp)
        else:
            ignored += 1
    good = newest(good, len(good))
    head = verified_up_to
    if not good:
        return AnchorReport("unanchored", head, None, None, ignored,
                            f"verified up to seq {head}; no signed checkpoint to prove that no "
                            "newer record was removed")
    for cp in good:
        if cp.seq <= head and hash_at(cp.seq) != cp.hash:
            return AnchorReport("rewritten", head, cp, None, ignored,
                                f"record {cp.seq} differs from checkpoint seq {cp.seq} signed "
                                f"at {cp.time}: the chain was rewritten (or cut and "
                                "re-appended)")
    best = good[-1]
    if best.seq > head:
        if not chain_ok:
            return AnchorReport("unchecked", head, best, None, ignored,
                                f"checkpoint seq {best.seq} signed at {best.time} lies beyond "
                                f"the break in the chain (verified up to seq {head})")
        return AnchorReport("truncated", head, best, (head + 1, best.seq), ignored,
                            f"records {head + 1}..{best.seq} missing: the chain was "
                            f"truncated (it ends at seq {head}; checkpoint seq {best.seq} "
                            f"signed at {best.time})")
    tail = (f"; records {best.seq + 1}..{head} are not covered by a checkpoint yet"
            if head > best.seq else "")
    return AnchorReport("proven", head, best, None, ignored,
                        f"verified up to seq {head}; checkpoint seq {best.seq} signed at "
                        f"{best.time} proves no record up to {best.seq} was removed{tail}")
