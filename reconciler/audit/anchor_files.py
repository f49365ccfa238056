"""The controller's anchor key and anchor file, in its data dir (never in the database).

- `audit-anchor.key`: the Ed25519 private key checkpoints are signed with (PKCS#8 PEM, 0600),
  created on the first start.
- `audit-anchor.pub`: its public key (PEM, 0644), for verifiers that do not hold the key.
- `audit-anchors.json`: the newest checkpoints the controller made or read back from its
  proxies, plus `evidence`: checkpoints the chain once contradicted, never rotated out.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from reconciler.audit.anchor import AnchorReport, Checkpoint, CheckpointError, judge, newest
from reconciler.audit.chain import VerifyResult
from reconciler.audit.errors import ChainBroken, RecordNotFound
from reconciler.audit.log import AuditLog

KEY_FILE = "audit-anchor.key"
PUBLIC_KEY_FILE = "audit-anchor.pub"
ANCHOR_FILE = "audit-anchors.json"
KEEP = 16


def _write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    """The anchor key; created (and its .pub written) if missing. Concurrent first starts
    agree: the key file is created with O_EXCL."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / KEY_FILE
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = load_key(data_dir)
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
    pub = data_dir / PUBLIC_KEY_FILE
    pub_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    if not pub.exists() or pub.read_bytes() != pub_pem:
        _write(pub, pub_pem, 0o644)
    return key


def load_key(data_dir: Path) -> Ed25519PrivateKey:
    path = data_dir / KEY_FILE
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a usable anchor key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path}: not an Ed25519 key")
    return key


def load_public_keys(data_dir: Path) -> list[Ed25519PublicKey]:
    """The anchor public key (from the private key if readable, else the .pub file); empty
    if neither exists."""
    keys: list[Ed25519PublicKey] = []
    if (data_dir / KEY_FILE).exists():
        with contextlib.suppress(CheckpointError, PermissionError):
            keys.append(load_key(data_dir).public_key())
    if not keys and (data_dir / PUBLIC_KEY_FILE).exists():
        try:
            pub = load_pem_public_key((data_dir / PUBLIC_KEY_FILE).read_bytes())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{data_dir / PUBLIC_KEY_FILE}: {exc}") from None
        if not isinstance(pub, Ed25519PublicKey):
            raise CheckpointError(f"{data_dir / PUBLIC_KEY_FILE}: not an Ed25519 key")
        keys.append(pub)
    return keys


@dataclass
class AnchorFile:
    """`audit-anchors.json`: read with `load`, change, `save` (atomic)."""

    path: Path
    checkpoints: list[Checkpoint] = field(default_factory=list)
    evidence: list[Checkpoint] = field(default_factory=list)

    @classmethod
    def load(cls, data_dir: Path) -> AnchorFile:
        """Missing file: empty. An unreadable or malformed one raises `CheckpointError`
        (it is evidence: never silently replaced)."""
        path = data_dir / ANCHOR_FILE
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise CheckpointError("not a JSON object")
            cps = [Checkpoint.from_dict(d) for d in doc.get("checkpoints", [])]
            ev = [Checkpoint.from_dict(d) for d in doc.get("evidence", [])]
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: malformed anchor file ({exc})") from None
        return cls(path, cps, ev)

    def all(self) -> list[Checkpoint]:
        return newest([*self.evidence, *self.checkpoints], len(self.evidence)
                      + len(self.checkpoints))

    def newest(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None

    def add(self, *checkpoints: Checkpoint) -> bool:
        """Merge (keeping the `KEEP` highest seqs); True if anything changed."""
        merged = newest([*self.checkpoints, *checkpoints], KEEP)
        if merged == self.checkpoints:
            return False
        self.checkpoints = merged
        return True

    def add_evidence(self, checkpoint: Checkpoint) -> bool:
        if checkpoint in self.evidence:
            return False
        self.evidence.append(checkpoint)
        return True

    def save(self) -> None:
        doc = {"version": 1, "checkpoints": [c.to_dict() for c in self.checkpoints],
               "evidence": [c.to_dict() for c in self.evidence]}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(self.path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), 0o600)


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """Checkpoints from a file: a proxy's `audit-checkpoints.json` (a list) or a
    controller's `audit-anchors.json` (checkpoints and evidence). Raises `CheckpointError`."""
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    items = doc if isinstance(doc, list) else (
        [*doc.get("checkpoints", []), *doc.get("evidence", [])] if isinstance(doc, dict) else None)
    if items is None:
        raise CheckpointError(f"{path}: neither a list of checkpoints nor an anchor file")
    try:
        return [Checkpoint.from_dict(d) for d in items]
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def anchor_report(log: AuditLog, result: VerifyResult, data_dir: Path,
                  extra: Iterable[Path] = ()) -> AnchorReport:
    """Judge a verified chain against the data dir's anchor file and public key and the
    checkpoint files in `extra` (e.g. copied from proxies' state dirs)."""
    cps = AnchorFile.load(data_dir).all()
    for path in extra:
        cps.extend(read_checkpoints(path))

    def hash_at(seq: int) -> str | None:
        try:
            return log.get(seq).hash
        except (RecordNotFound, ChainBroken):
            return None

    return judge(chain_ok=result.ok, verified_up_to=result.verified_up_to, hash_at=hash_at,
                 checkpoints=cps, public_keys=load_public_keys(data_dir))
