"""The record format and hash rule, without a database."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from reconciler.audit import (
    GENESIS_HASH,
    MAX_DATA_BYTES,
    REDACTED,
    AuditEntry,
    AuditRecord,
    InvalidRecord,
    RecordTooLarge,
)
from reconciler.audit.record import build_chain, build_record, prepare_data

NOW = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


def entry(data: dict[str, Any] | None = None, **fields: str) -> AuditEntry:
    return AuditEntry(
        actor=fields.get("actor", "admin-token:1a2b"),
        kind=fields.get("kind", "revision.detected"),
        subject=fields.get("subject", "commit 3f2a"),
        data={"n": 1} if data is None else data,
    )


def independent_hash(record: dict[str, Any]) -> str:
    """The recipe from docs/audit.md, written out separately from the implementation."""
    fields = {
        k: record[k] for k in ("seq", "time", "actor", "kind", "subject", "data", "prev_hash")
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_hash_follows_the_documented_rule() -> None:
    record = build_record(
        seq=1, now=NOW, entry=entry({"ü": "naïve", "list": [1, 2.5]}), prev_hash=GENESIS_HASH
    )
    assert record.hash == independent_hash(record.to_dict())
    assert record.prev_hash == "0" * 64
    assert record.time == "2026-11-25T12:00:00.123456Z"


def test_hash_of_a_fixed_record_never_changes() -> None:
    # Pinned value: if this changes, every existing trail stops verifying.
    record = build_record(
        seq=7, now=NOW, entry=entry({"b": [1, "x"], "a": None}), prev_hash="ab" * 32
    )
    canonical = (
        '{"actor":"admin-token:1a2b","data":{"a":null,"b":[1,"x"]},"kind":"revision.detected",'
        '"prev_hash":"' + "ab" * 32 + '","seq":7,"subject":"commit 3f2a",'
        '"time":"2026-11-25T12:00:00.123456Z"}'
    )
    assert record.hash == hashlib.sha256(canonical.encode()).hexdigest()


def test_chain_links_each_record_to_the_one_before() -> None:
    records = build_chain(first_seq=1, prev_hash=GENESIS_HASH, entries=[entry()] * 3, now=NOW)
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS_HASH
    assert records[1].prev_hash == records[0].hash
    assert records[2].prev_hash == records[1].hash
    assert len({r.hash for r in records}) == 3


def test_time_is_converted_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    record = build_record(
        seq=1, now=datetime(2026, 1, 1, 14, 0, tzinfo=plus2), entry=entry(), prev_hash=GENESIS_HASH
    )
    assert record.time == "2026-01-01T12:00:00.000000Z"
    assert record.timestamp == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_naive_time_is_refused() -> None:
    with pytest.raises(InvalidRecord, match="timezone-aware"):
        build_record(seq=1, now=datetime(2026, 1, 1), entry=entry(), prev_hash=GENESIS_HASH)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"actor": ""}, "actor"),
        ({"actor": "   "}, "actor"),
        ({"actor": "a\nb"}, "actor"),
        ({"actor": "x" * 257}, "actor"),
        ({"kind": "Revision.Detected"}, "kind"),
        ({"kind": "revision detected"}, "kind"),
        ({"kind": ".x"}, "kind"),
        ({"kind": ""}, "kind"),
        ({"kind": "a" * 65}, "kind"),
        ({"subject": "x\x00y"}, "subject"),
        ({"subject": "s" * 1025}, "subject"),
    ],
)
def test_bad_fields_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRecord, match=message):
        build_record(seq=1, now=NOW, entry=entry(**fields), prev_hash=GENESIS_HASH)


@pytest.mark.parametrize(
    "data",
    [
        ["not", "an", "object"],
        "text",
        {1: "int key"},
        {"nan": float("nan")},
        {"inf": float("inf")},
        {"obj": object()},
        {"bytes": b"raw"},
        {"surrogate": "\ud800"},
    ],
)
def test_data_that_is_not_a_json_object_is_refused(data: Any) -> None:
    with pytest.raises(InvalidRecord):
        prepare_data(data)


def test_bad_seq_and_prev_hash_are_refused() -> None:
    with pytest.raises(InvalidRecord, match="seq"):
        build_record(seq=0, now=NOW, entry=entry(), prev_hash=GENESIS_HASH)
    with pytest.raises(InvalidRecord, match="prev_hash"):
        build_record(seq=1, now=NOW, entry=entry(), prev_hash="XYZ")


def test_data_is_copied_through_json() -> None:
    original: dict[str, Any] = {"tuple": (1, 2), "nested": {"k": [1]}}
    stored = prepare_data(original)
    assert stored == {"tuple": [1, 2], "nested": {"k": [1]}}
    stored["nested"]["k"].append(2)
    assert original["nested"]["k"] == [1]


def test_data_at_the_cap_is_accepted_and_over_it_refused() -> None:
    overhead = len(json.dumps({"x": ""}, separators=(",", ":")))
    at_cap = {"x": "a" * (MAX_DATA_BYTES - overhead)}
    assert prepare_data(at_cap) == at_cap
    with pytest.raises(RecordTooLarge) as caught:
        prepare_data({"x": "a" * (MAX_DATA_BYTES - overhead + 1)})
    assert caught.value.size == MAX_DATA_BYTES + 1
    assert caught.value.limit == MAX_DATA_BYTES


def test_multibyte_text_counts_in_utf8_bytes() -> None:
    # 30,000 two-byte characters: 60,000 bytes (fits); 33,000: 66,000 bytes (does not).
    assert prepare_data({"x": "é" * 30_000})
    with pytest.raises(RecordTooLarge):
        prepare_data({"x": "é" * 33_000})


def test_oversized_data_can_be_truncated_with_a_marker() -> None:
    big = {"findings": [{"file": f"routes/{i}.yaml", "line": i} for i in range(5000)]}
    original = json.dumps(big, sort_keys=True, separators=(",", ":")).encode()
    stored = prepare_data(big, oversize="truncate")
    assert stored["_truncated"] is True
    assert stored["original_bytes"] == len(original)
    assert stored["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert original.decode().startswith(stored["preview"])
    assert len(json.dumps(stored)) < MAX_DATA_BYTES


def test_secrets_are_redacted_before_hashing_by_default() -> None:
    data = {
        "token": "mjt_abc",
        "token_id": "t1",
        "nested": {"dbPassword": "pw", "user": "ana"},
        "items": [{"api_key": "k", "name": "x"}],
    }
    record = build_record(seq=1, now=NOW, entry=entry(data), prev_hash=GENESIS_HASH)
    assert record.data == {
        "token": REDACTED,
        "token_id": "t1",
        "nested": {"dbPassword": REDACTED, "user": "ana"},
        "items": [{"api_key": REDACTED, "name": "x"}],
    }
    assert "mjt_abc" not in json.dumps(record.to_dict())
    assert record.hash == independent_hash(record.to_dict())


def test_redaction_can_be_turned_off() -> None:
    record = build_record(
        seq=1, now=NOW, entry=entry({"token": "t"}), prev_hash=GENESIS_HASH, redact=False
    )
    assert record.data == {"token": "t"}


def test_record_round_trips_through_its_dict() -> None:
    record = build_record(seq=3, now=NOW, entry=entry(), prev_hash=GENESIS_HASH)
    assert AuditRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    with pytest.raises(InvalidRecord):
        AuditRecord.from_dict({"seq": 1})
