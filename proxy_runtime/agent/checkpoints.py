"""The agent's audit checkpoints (docs/audit.md, "Anchors"): the newest few signed
checkpoints of the controller's audit chain, kept in the state dir so that a controller
whose database lost its newest records learns of it from the proxies' hellos.

The agent does not interpret them (the controller checks the signatures); it keeps the
highest seqs it was given, so a controller that comes back with a shorter chain keeps
being told what it once had.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from proxy_runtime.protocol.fleet import Checkpoint, ProtocolError, decode_to_proxy

CHECKPOINT_FILE = "audit-checkpoints.json"
KEEP = 5

log = logging.getLogger("meshcd.agent")


def _wire(cp: Checkpoint) -> dict[str, Any]:
    return {"seq": cp.seq, "hash": cp.hash, "time": cp.time, "keyId": cp.key_id,
            "signature": cp.signature}


def _parse(doc: Any) -> Checkpoint | None:
    try:
        msg = decode_to_proxy(json.dumps({"type": "checkpoint", **doc}))
    except (ProtocolError, TypeError):
        return None
    return msg if isinstance(msg, Checkpoint) else None


class CheckpointStore:
    """`<state dir>/audit-checkpoints.json`: the `KEEP` checkpoints of highest seq."""

    def __init__(self, state_dir: Path, keep: int = KEEP) -> None:
        self.path = Path(state_dir) / CHECKPOINT_FILE
        self.keep = keep
        self.items: list[Checkpoint] = self._load()

    def _load(self) -> list[Checkpoint]:
        try:
            doc = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable, starting without checkpoints: %s", self.path, exc)
            return []
        items = [cp for d in (doc if isinstance(doc, list) else [])
                 if isinstance(d, dict) and (cp := _parse(d)) is not None]
        return sorted(items, key=lambda c: (c.seq, c.time))[-self.keep:]

    def newest(self) -> Checkpoint | None:
        return self.items[-1] if self.items else None

    def add(self, cp: Checkpoint) -> bool:
        """Keep `cp` if it is among the `keep` highest seqs; True if the file changed."""
        if cp in self.items:
            return False
        merged = sorted([*self.items, cp], key=lambda c: (c.seq, c.time))[-self.keep:]
        if merged == self.items:
            return False
        self.items = merged
        self._save()
        return True

    def _save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps([_wire(c) for c in self.items], indent=1).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
