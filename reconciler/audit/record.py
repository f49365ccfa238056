"""The audit record and its hash rule. Pure: no I/O, no clock.

A record is {seq, time, actor, kind, subject, data, prev_hash, hash}. Its hash is

    sha256_hex(canonical_json({seq, time, actor, kind, subject, data, prev_hash}))

where canonical JSON means: keys sorted, no whitespace (separators "," and ":"), non-ASCII
written as UTF-8 (not \\u escapes), NaN/Infinity refused. The first record's prev_hash is
64 zeros; every later record's prev_hash is the hash of the record before it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, Literal

from reconciler.audit.errors import InvalidRecord, RecordTooLarge
from reconciler.audit.redact import redact_secrets
from reconciler.store.timefmt import format_instant, parse_instant

GENESIS_HASH = "0" * 64
# The cap on a record's data, as canonical JSON bytes. Big enough for a plan summary or a
# page of findings; small enough that a page of 100 records stays a few MB at most.
MAX_DATA_BYTES = 64 * 1024
# What a truncated record keeps of the original data, so a reader sees what it was about.
TRUNCATED_PREVIEW_CHARS = 4096
MAX_ACTOR_CHARS = 256
MAX_SUBJECT_CHARS = 1024
MAX_KIND_CHARS = 64
# Dotted lowercase words: "revision.detected", "token.refused", "proxy.connect".
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEX64 = re.compile(r"[0-9a-f]{64}")

Oversize = Literal["reject", "truncate"]


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of `value` (the form the hash and the size cap apply to)."""
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise InvalidRecord(f"not representable as canonical JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored audit record. `time` is the exact UTC text that the hash covers."""

    seq: int
    time: str
    actor: str
    kind: str
    subject: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def timestamp(self) -> datetime:
        return parse_instant(self.time)

    def hashed_fields(self) -> dict[str, Any]:
        """The fields the hash covers (everything but the hash itself)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "kind": self.kind,
            "subject": self.subject,
            "data": self.data,
            "prev_hash": self.prev_hash,
        }

    def to_dict(self) -> dict[str, Any]:
        """All fields, as written by `export_jsonl` (one line per record)."""
        return {**self.hashed_fields(), "hash": self.hash}

    def computed_hash(self) -> str:
        return record_hash(self.hashed_fields())

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> AuditRecord:
        """A record from an exported JSONL line (no hash check; use `verify_records`)."""
        try:
            return cls(
                seq=int(value["seq"]),
                time=str(value["time"]),
                actor=str(value["actor"]),
                kind=str(value["kind"]),
                subject=str(value["subject"]),
                data=dict(value["data"]),
                prev_hash=str(value["prev_hash"]),
                hash=str(value["hash"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRecord(f"not an audit record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Anchor:
    """A (seq, hash) pair to publish or pin: proves the chain up to `seq` is unchanged."""

    seq: int
    hash: str


def record_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fields)).hexdigest()


def is_hash(value: str) -> bool:
    return bool(_HEX64.fullmatch(value))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a caller appends; the log assigns seq, time and the hashes."""

    actor: str
    kind: str
    subject: str
    data: dict[str, Any]


def prepare_data(
    data: dict[str, Any] | None,
    *,
    redact: bool = True,
    oversize: Oversize = "reject",
    limit: int = MAX_DATA_BYTES,
) -> dict[str, Any]:
    """Validate, redact and size-check `data`; return it as it will be stored.

    The result is a fresh JSON round-trip of the input (lists, not tuples; no shared
    references), so what `append` returns equals what a later read returns.
    Oversized data is refused (`RecordTooLarge`), or with `oversize="truncate"` replaced by
    `{"_truncated": true, "original_bytes": N, "original_sha256": H, "preview": ...}` so a
    holder of the original can still prove it matches.
    """
    return _prepare_data(data, redact=redact, oversize=oversize, limit=limit)[0]


def _prepare_data(
    data: dict[str, Any] | None, *, redact: bool, oversize: Oversize, limit: int = MAX_DATA_BYTES
) -> tuple[dict[str, Any], str]:
    """`prepare_data`, plus the canonical JSON text of the result."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidRecord(f"audit data must be a JSON object (dict), got {type(data).__name__}")
    if any(not isinstance(k, str) for k in data):
        raise InvalidRecord("audit data keys must be strings")
    if redact:
        data = redact_secrets(data)
    encoded = canonical_json(data)
    if len(encoded) > limit:
        if oversize != "truncate":
            raise RecordTooLarge(len(encoded), limit)
        marker = {
            "_truncated": True,
            "original_bytes": len(encoded),
            "original_sha256": hashlib.sha256(encoded).hexdigest(),
            "preview": encoded.decode("utf-8")[:TRUNCATED_PREVIEW_CHARS],
        }
        encoded = canonical_json(marker)
    text = encoded.decode("utf-8")
    result: dict[str, Any] = json.loads(text)
    return result, text


def check_entry_fields(actor: str, kind: str, subject: str) -> None:
    """Refuse fields that would make the trail ambiguous or unsearchable."""
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidRecord("actor must be a non-empty string (who did it)")
    if len(actor) > MAX_ACTOR_CHARS or _CONTROL.search(actor):
        raise InvalidRecord(f"actor must be at most {MAX_ACTOR_CHARS} printable characters")
    if not isinstance(kind, str) or len(kind) > MAX_KIND_CHARS or not KIND_PATTERN.fullmatch(kind):
        raise InvalidRecord(
            f"kind {kind!r} must be dotted lowercase words like 'revision.detected' "
            f"(at most {MAX_KIND_CHARS} characters)"
        )
    if not isinstance(subject, str):
        raise InvalidRecord("subject must be a string (may be empty)")
    if len(subject) > MAX_SUBJECT_CHARS or _CONTROL.search(subject):
        raise InvalidRecord(f"subject must be at most {MAX_SUBJECT_CHARS} printable characters")
    for name, value in (("actor", actor), ("subject", subject)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRecord(f"{name} is not valid Unicode text") from exc


@dataclass(frozen=True, slots=True)
class PreparedEntry:
    """An entry checked and ready to be linked: time formatted, data final (and as text)."""

    time: str
    actor: str
    kind: str
    subject: str
    data: dict[str, Any]
    data_json: str


def prepare_entries(
    entries: Sequence[AuditEntry],
    *,
    now: datetime,
    redact: bool = True,
    oversize: Oversize = "reject",
) -> list[PreparedEntry]:
    """Everything about new records that does not depend on the chain's tail.

    Done before the writers' lock is taken, so bad input fails fast and the lock is held
    only for `link_entries` (hashing) and the insert.
    """
    try:
        time = format_instant(now)
    except ValueError as exc:
        raise InvalidRecord(str(exc)) from exc
    prepared = []
    for entry in entries:
        check_entry_fields(entry.actor, entry.kind, entry.subject)
        data, data_json = _prepare_data(entry.data, redact=redact, oversize=oversize)
        prepared.append(
            PreparedEntry(time, entry.actor, entry.kind, entry.subject, data, data_json)
        )
    return prepared


def link_entries(
    prepared: Sequence[PreparedEntry],
    *,
    first_seq: int,
    prev_hash: str,
    not_before: str | None = None,
) -> list[AuditRecord]:
    """Chain prepared entries onto (first_seq - 1, prev_hash).

    `not_before` is the tail record's time: a record's time is never earlier than the one
    before it (clocks of different controllers disagree a little; the trail reads forward).
    """
    if first_seq < 1:
        raise InvalidRecord("seq starts at 1")
    if not is_hash(prev_hash):
        raise InvalidRecord("prev_hash must be 64 lowercase hex digits")
    records = []
    for offset, entry in enumerate(prepared):
        time = entry.time if not_before is None or entry.time >= not_before else not_before
        seq = first_seq + offset
        digest = _hash_with_data_text(
            seq, time, entry.actor, entry.kind, entry.subject, entry.data_json, prev_hash
        )
        records.append(
            AuditRecord(
                seq, time, entry.actor, entry.kind, entry.subject, entry.data, prev_hash, digest
            )
        )
        prev_hash = digest
    return records


def _hash_with_data_text(
    seq: int, time: str, actor: str, kind: str, subject: str, data_json: str, prev_hash: str
) -> str:
    """`record_hash` for a record whose data is already canonical JSON text.

    The same bytes as `canonical_json` of the whole record (keys in sorted order: actor,
    data, kind, prev_hash, seq, subject, time), without serialising the data a second time.
    """

    q = encode_basestring  # what json.dumps(ensure_ascii=False) uses for strings
    body = (
        f'{{"actor":{q(actor)},"data":{data_json},"kind":{q(kind)},'
        f'"prev_hash":{q(prev_hash)},"seq":{seq},"subject":{q(subject)},"time":{q(time)}}}'
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def build_record(
    *,
    seq: int,
    now: datetime,
    entry: AuditEntry,
    prev_hash: str,
    redact: bool = True,
    oversize: Oversize = "reject",
) -> AuditRecord:
    """The record that extends a chain whose tail hash is `prev_hash`."""
    prepared = prepare_entries([entry], now=now, redact=redact, oversize=oversize)
    return link_entries(prepared, first_seq=seq, prev_hash=prev_hash)[0]


def build_chain(
    *,
    first_seq: int,
    prev_hash: str,
    entries: Sequence[AuditEntry],
    now: datetime,
    redact: bool = True,
    oversize: Oversize = "reject",
) -> list[AuditRecord]:
    """Records for `entries`, chained one after the other from (first_seq, prev_hash)."""
    prepared = prepare_entries(entries, now=now, redact=redact, oversize=oversize)
    return link_entries(prepared, first_seq=first_seq, prev_hash=prev_hash)
