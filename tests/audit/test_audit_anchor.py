"""Signed checkpoints (reconciler.audit.anchor) against a real store on both backends: the
newest records deleted with raw SQL (what someone with database access can do) leave a
valid, shorter chain that verify() alone calls intact; the checkpoints kept outside the
database show the cut and the missing seqs. Also `meshcd audit verify --store` as a real
process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_audit_tamper import tamper

from reconciler.audit import AuditLog
from reconciler.audit.anchor import (
    Checkpoint,
    CheckpointError,
    judge,
    make_checkpoint,
    signature_ok,
)
from reconciler.audit.anchor_files import (
    ANCHOR_FILE,
    KEY_FILE,
    AnchorFile,
    load_or_create_key,
    load_public_keys,
)

MESHCD = str(Path(sys.executable).parent / "meshcd")


def fill(log: AuditLog, clock: Any, n: int, start: int = 1) -> None:
    for i in range(start, start + n):
        log.append("user", "deploy.step", f"proxy-{i}", {"i": i}, now=clock.tick())


def report(log: AuditLog, cps: list[Checkpoint], key: Ed25519PrivateKey) -> Any:
    result = log.verify()

    def hash_at(seq: int) -> str | None:
        return log.get(seq).hash

    return judge(chain_ok=result.ok, verified_up_to=result.verified_up_to, hash_at=hash_at,
                 checkpoints=cps, public_keys=[key.public_key()])


def test_signature_covers_every_field(clock: Any, log: AuditLog) -> None:
    fill(log, clock, 3)
    key = Ed25519PrivateKey.generate()
    head = log.head()
    assert head is not None
    cp = make_checkpoint(key, head, clock())
    assert signature_ok(cp, key.public_key())
    assert cp.time == "2026-11-25T12:00:03.000000Z"
    doc = cp.to_dict()
    for name, value in (("seq", 2), ("hash", "0" * 64), ("time", "2026-11-25T12:00:04.000000Z")):
        forged = Checkpoint.from_dict({**doc, name: value})
        assert not signature_ok(forged, key.public_key()), name
    assert not signature_ok(cp, Ed25519PrivateKey.generate().public_key())
    assert not signature_ok(Checkpoint.from_dict({**doc, "signature": "not base64!"}),
                            key.public_key())
    with pytest.raises(CheckpointError, match="hash"):
        Checkpoint.from_dict({**doc, "hash": "XYZ"})


def test_deleting_the_newest_rows_is_reported_with_the_missing_seqs(clock: Any,
                                                                     log: AuditLog) -> None:
    fill(log, clock, 10)
    key = Ed25519PrivateKey.generate()
    head = log.head()
    assert head is not None
    cp = make_checkpoint(key, head, clock())
    assert report(log, [cp], key).status == "proven"
    tamper(log, "DELETE FROM audit_records WHERE seq > 7")
    assert log.verify().ok  # the chain alone cannot tell
    got = report(log, [cp], key)
    assert (got.status, got.missing, got.chain_head, got.ok) == ("truncated", (8, 10), 7, False)
    assert got.message.startswith("records 8..10 missing: the chain was truncated")


def test_cut_and_reappended_tail_is_reported_as_rewritten(clock: Any, log: AuditLog) -> None:
    fill(log, clock, 10)
    key = Ed25519PrivateKey.generate()
    head = log.head()
    assert head is not None
    cp = make_checkpoint(key, head, clock())
    tamper(log, "DELETE FROM audit_records WHERE seq > 6")
    fill(log, clock, 6, start=100)  # seqs 7..12 again, other contents
    got = report(log, [cp], key)
    assert (got.status, got.checkpoint) == ("rewritten", cp)
    assert "record 10 differs from checkpoint seq 10" in got.message


def test_every_checkpoint_must_hold_not_only_the_newest(clock: Any, log: AuditLog) -> None:
    """A truncation stays visible once new records (and new checkpoints) pass the old seq."""
    fill(log, clock, 5)
    key = Ed25519PrivateKey.generate()
    old = log.head()
    assert old is not None
    before = make_checkpoint(key, old, clock())
    tamper(log, "DELETE FROM audit_records WHERE seq > 3")
    fill(log, clock, 5, start=50)
    new = log.head()
    assert new is not None
    after = make_checkpoint(key, new, clock())
    got = report(log, [after, before], key)
    assert (got.status, got.checkpoint) == ("rewritten", before)


def test_proven_and_what_is_not_covered_yet(clock: Any, log: AuditLog) -> None:
    fill(log, clock, 4)
    key = Ed25519PrivateKey.generate()
    head = log.head()
    assert head is not None
    cp = make_checkpoint(key, head, clock())
    fill(log, clock, 2, start=5)
    got = report(log, [cp], key)
    assert got.status == "proven" and got.ok
    assert got.message == (f"verified up to seq 6; checkpoint seq 4 signed at {cp.time} proves "
                           "no record up to 4 was removed; records 5..6 are not covered by a "
                           "checkpoint yet")
    forged = Checkpoint.from_dict({**cp.to_dict(), "seq": 99})
    got = report(log, [cp, forged], key)  # a checkpoint nobody signed counts for nothing
    assert (got.status, got.ignored) == ("proven", 1)
    assert report(log, [], key).status == "unanchored"


def test_key_and_anchor_file(tmp_path: Path, clock: Any, log: AuditLog) -> None:
    data = tmp_path / "ctl"
    key = load_or_create_key(data)
    assert (data / KEY_FILE).stat().st_mode & 0o777 == 0o600
    again = load_or_create_key(data)
    assert again.public_key() == key.public_key()
    (data / KEY_FILE).unlink()  # a verifier without the private key uses the .pub
    assert load_public_keys(data) == [key.public_key()]
    fill(log, clock, 2)
    head = log.head()
    assert head is not None
    f = AnchorFile.load(data)
    assert f.all() == []
    cps = []
    for i in range(20):
        fill(log, clock, 1, start=10 + i)
        h = log.head()
        assert h is not None
        cps.append(make_checkpoint(key, h, clock()))
        f.add(cps[-1])
    f.add_evidence(cps[0])
    f.save()
    back = AnchorFile.load(data)
    assert back.checkpoints == cps[-16:] and back.evidence == [cps[0]]
    assert back.all()[0] == cps[0]
    (data / ANCHOR_FILE).write_text("{broken")
    with pytest.raises(CheckpointError, match="malformed anchor file"):
        AnchorFile.load(data)


def test_meshcd_audit_verify_reports_truncation(tmp_path: Path, clock: Any, db_url: str) -> None:
    """The real CLI against a real store: the data dir's anchor file, and a proxy's
    checkpoint file given with --checkpoints."""
    data = tmp_path / "ctl"
    log = AuditLog.open(db_url)
    try:
        fill(log, clock, 9)
        key = load_or_create_key(data)
        mid = log.head()
        assert mid is not None
        f = AnchorFile.load(data)
        f.add(make_checkpoint(key, mid, clock()))
        f.save()
        fill(log, clock, 3, start=10)
        head = log.head()
        assert head is not None
        proxy_cp = make_checkpoint(key, head, clock())  # only a proxy got this one
        proxy_file = tmp_path / "audit-checkpoints.json"
        proxy_file.write_text(json.dumps([proxy_cp.to_dict()]))

        def verify(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([MESHCD, "audit", "verify", "--store", db_url, "--data-dir",
                                   str(data), *extra], capture_output=True, text=True,
                                  timeout=60)

        ok = verify("--checkpoints", str(proxy_file))
        assert ok.returncode == 0, ok.stderr
        assert "checkpoint seq 12 signed at" in ok.stdout
        assert "proves no record up to 12 was removed" in ok.stdout
        tamper(log, "DELETE FROM audit_records WHERE seq > 10")
        own = verify()  # the controller's file has seq 9 only: still proven up to 9
        assert own.returncode == 0 and "no record up to 9 was removed" in own.stdout
        cut = verify("--checkpoints", str(proxy_file))
        assert cut.returncode == 1, cut.stdout
        assert "audit chain intact: 10 records verified" in cut.stdout
        assert ("audit chain TRUNCATED: records 11..12 missing: the chain was truncated"
                in cut.stderr)
        tamper(log, "DELETE FROM audit_records WHERE seq > 5")
        cut = verify()
        assert cut.returncode == 1 and "records 6..9 missing" in cut.stderr
    finally:
        log.close()
