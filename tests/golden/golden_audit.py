"""Audit record shapes for the golden files (the contract of docs/audit.md).

- `record.json`, `record-redacted.json`, `record-truncated.json`: the record itself as
  `meshcd audit export --format jsonl` writes it (`AuditRecord.to_dict()`), built by the pure
  `reconciler.audit.record.build_record` at a fixed time: a plain one, one whose data names
  secrets, one whose data is over the size cap with `oversize="truncate"`.
- `rollout.<event>.json`: one record per kind the pure RolloutEngine emits, from the first
  `Audit` command of that kind in scripted rollouts (tests/support/rollout_playbook.py), turned
  into a record by `build_record`. The canary shell adds `revision_id` (and `source` to
  `rollout.judged`) when it appends them; that addition is not pinned here.
- `token.*.json`, `svid.*.json`: what joining a proxy writes (reconciler.ca.enrollment: a real
  CA, join tokens and audit log in SQLite in a temporary folder). Token ids, certificate
  serials and the hashes are random per run: they are written as `<token-id>`, `<serial>`,
  `<hash>` (the shape is pinned, and the chain is verified before they are blanked).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rollout_playbook import ERRORS_5XX, Playbook

from reconciler.audit import AuditLog
from reconciler.audit.record import AuditEntry, AuditRecord, Oversize, build_record
from reconciler.ca import (
    CertificateAuthority,
    CSRRejected,
    JoinTokens,
    TokenRefused,
    enroll,
    issue_join_token,
)
from reconciler.rollout import Audit, Nacked
from reconciler.store import open_engine
from reconciler.store.engine import sqlite_url

NOW = datetime(2026, 11, 25, 17, 38, 1, 123456, tzinfo=UTC)
PREV = "7" * 64


def _record(entry: AuditEntry, oversize: Oversize = "reject") -> AuditRecord:
    return build_record(seq=42, now=NOW, entry=entry, prev_hash=PREV, oversize=oversize)


def _text(record: AuditRecord) -> str:
    return json.dumps(record.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- scripted rollouts that, together, make the engine emit every kind it has --------------


def _promoted_with_a_queued_commit_and_a_restart() -> Playbook:
    pb = Playbook.fast(on_new_commit="finish-then-next")
    pb.start()
    pb.ack("a2")
    pb.traffic(3)
    pb.fire("bake")
    pb.commit("rev-3")  # rollout.next_queued
    pb.restart()  # rollout.restored: the stage is pushed again
    pb.ack_pushed()
    pb.traffic(3)
    pb.fire("bake")
    pb.ack("a1", "w3", "w4")
    pb.traffic(3)
    pb.fire("bake")
    return pb


def _paused_then_aborted() -> Playbook:
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    pb.op("pause", actor="user:bob", reason="checking dashboards")
    pb.op("abort", actor="user:bob", reason="p99 looks off")
    return pb


def _failed_with_a_refused_rollback() -> Playbook:
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    pb.traffic(3)
    pb.fire("bake")
    pb.ack("w1", "w2")
    pb.traffic(3, canary=ERRORS_5XX)
    pb.send(Nacked("a2", pb.old("a2") or "", "old config broken", pb.now))
    pb.ack_old("w1", "w2")
    return pb


def _canary_dropped() -> Playbook:
    """The stage 1 canary goes away before it ACKs: dropped, not failed."""
    pb = Playbook.fast()
    pb.start()
    pb.disconnect("a2")
    return pb


def _stage_skipped() -> Playbook:
    """One proxy: stage 2 (50%) would only bake the canary of stage 1 again."""
    pb = Playbook.fast({"api": 1})
    pb.start()
    pb.ack("a1")
    pb.traffic(3)
    pb.fire("bake")
    return pb


SCRIPTS: tuple[Callable[[], Playbook], ...] = (
    _promoted_with_a_queued_commit_and_a_restart, _paused_then_aborted,
    _failed_with_a_refused_rollback, _canary_dropped, _stage_skipped,
)


def rollout_audits() -> dict[str, Audit]:
    """Kind -> the first Audit command of that kind over the scripts."""
    first: dict[str, Audit] = {}
    for script in SCRIPTS:
        for a in script().audits():
            first.setdefault(a.kind, a)
    return first


# --- joining a proxy -----------------------------------------------------------------------


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def _forged_csr() -> bytes:
    """A well-formed CSR whose signature does not verify (its last byte flipped)."""
    der = bytearray(x509.load_pem_x509_csr(_csr()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


def _blank(record: AuditRecord, token_ids: dict[str, str]) -> dict[str, Any]:
    out = record.to_dict()
    data = dict(out["data"])
    if data.get("token_id") is not None:
        data["token_id"] = token_ids.get(data["token_id"], "<unknown token-id>")
    if "serial" in data:
        data["serial"] = "<serial>"
    out["data"] = data
    out["hash"] = out["prev_hash"] = "<hash>"
    return out


def enrollment_records() -> dict[str, dict[str, Any]]:
    """Kind -> the first record of that kind written by issuing a token, a join, a second
    join with the spent token, and a join with a forged CSR."""
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    with tempfile.TemporaryDirectory(prefix="meshcd-golden-") as tmp:
        engine = open_engine(sqlite_url(tmp))
        try:
            ca = CertificateAuthority.load_or_create(Path(tmp) / "ca", "mesh.example", now=now)
            tokens, audit = JoinTokens(engine), AuditLog(engine)
            issued = issue_join_token(tokens, audit, actor="admin-token:ab12", service="web",
                                      namespace="shop", now=now)

            def join(csr: bytes) -> None:
                enroll(ca=ca, tokens=tokens, audit=audit, token=issued.token, csr_pem=csr,
                       service="web", namespace="shop", peer="10.0.0.7",
                       now=now + timedelta(minutes=1))

            join(_csr())
            refusals: tuple[tuple[bytes, type[Exception]], ...] = (
                (_csr(), TokenRefused), (_forged_csr(), CSRRejected))
            for bad, error in refusals:
                try:
                    join(bad)
                except error:
                    continue
                raise AssertionError(f"a join that must be refused ({error.__name__}) was not")
            audit.verify().raise_if_broken()
            records = list(audit.iter_records())
        finally:
            engine.dispose()
    first: dict[str, dict[str, Any]] = {}
    for r in records:
        first.setdefault(r.kind, _blank(r, {issued.id: "<token-id>"}))
    return first


def audit_records() -> dict[str, str]:
    out = {
        "record.json": _text(_record(AuditEntry(
            "admin-token:1a2b", "fleet.pinned", "3f9a1c0d2b4e6f8a0c1e3d5b7a9f0e2c4d6b8a0f",
            {"revision": 6, "reason": "incident 42", "ratio": 0.1, "tags": ("a", "b")}))),
        "record-redacted.json": _text(_record(AuditEntry(
            "admin-token:1a2b", "apitoken.created", "deployer",
            {"token": "s3cret", "token_id": "t-1", "nested": {"password": "p", "api_key": "k",
                                                             "password_set": True}}))),
        "record-truncated.json": _text(_record(AuditEntry(
            "scheduler", "revision.validated", "c0ffee",
            {"findings": [f"svc-{i}.yaml:1:1: error MCD011: unknown apiVersion"
                          for i in range(2000)]}), oversize="truncate")),
    }
    for kind, a in sorted(rollout_audits().items()):
        out[f"{kind}.json"] = _text(_record(AuditEntry(a.actor, a.kind, a.subject, dict(a.data))))
    for kind, d in sorted(enrollment_records().items()):
        out[f"{kind}.json"] = json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


__all__ = ["audit_records", "rollout_audits"]
