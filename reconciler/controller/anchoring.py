"""The controller's audit anchoring (docs/audit.md, "Anchors"): every `interval_s` it signs
the audit chain's head (when it moved) into a checkpoint, keeps it in the data dir's anchor
file and pushes it to every proxy; at start-up and at each proxy hello it checks the
database against the checkpoints it holds or is shown. A chain that no longer reaches a
checkpoint (truncated) or reaches it with another hash (rewritten) is recorded in the audit
(`audit.truncated` / `audit.rewritten`), logged in one line, kept as evidence in the anchor
file, and makes `status` degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from proxy_runtime.protocol import fleet as fleet_protocol
from reconciler.audit import AuditLog, ChainBroken, RecordNotFound, VerifyResult
from reconciler.audit.anchor import (
    AnchorReport,
    Checkpoint,
    from_wire,
    judge,
    make_checkpoint,
    signature_ok,
    to_wire,
)
from reconciler.audit.anchor_files import AnchorFile, load_or_create_key

log = logging.getLogger("meshcd.audit")

ANCHOR_INTERVAL_S = 5.0


class CheckpointSink(Protocol):
    def send_checkpoint(self, checkpoint: fleet_protocol.Checkpoint) -> int: ...


class AuditAnchoring:
    def __init__(self, data_dir: Path, audit: AuditLog, clock: Callable[[], datetime], *,
                 interval_s: float = ANCHOR_INTERVAL_S) -> None:
        self.audit = audit
        self.clock = clock
        self.interval_s = interval_s
        self.key = load_or_create_key(data_dir)  # CheckpointError: the caller's StartupError
        self.public_key = self.key.public_key()
        self.file = AnchorFile.load(data_dir)
        self.alarm: AnchorReport | None = None
        self.last: AnchorReport | None = None
        self._reported: set[tuple[int, str]] = set()
        self._foreign_keys: set[str] = set()  # key ids already warned about
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()  # the file and the alarm: touched from worker threads

    # -- checking (blocking: run in a thread) --------------------------------------------------

    def _hash_at(self, seq: int) -> str | None:
        try:
            return self.audit.get(seq).hash
        except (RecordNotFound, ChainBroken):
            return None

    def check(self, extra: Iterable[Checkpoint] = (), *, source: str = "anchor file"
              ) -> AnchorReport:
        """Judge the database's head against the anchor file (and `extra`). Cheap: reads the
        head and the records at the checkpoints' seqs, not the whole chain."""
        with self._lock:
            head = self.audit.head()
            report = judge(chain_ok=True, verified_up_to=head.seq if head is not None else 0,
                           hash_at=self._hash_at, checkpoints=[*self.file.all(), *extra],
                           public_keys=[self.public_key])
            self.last = report
            if not report.ok:
                self._alarm(report, source)
            return report

    def report(self, result: VerifyResult) -> AnchorReport:
        """A full `verify()` result against every checkpoint in the anchor file."""
        with self._lock:
            checkpoints = self.file.all()
        return judge(chain_ok=result.ok, verified_up_to=result.verified_up_to,
                     hash_at=self._hash_at, checkpoints=checkpoints,
                     public_keys=[self.public_key])

    def observe(self, wire: fleet_protocol.Checkpoint, proxy_id: str) -> AnchorReport | None:
        """A proxy's hello reported its newest checkpoint: keep it if it is ours, check it."""
        cp = from_wire(wire)
        if not signature_ok(cp, self.public_key):
            if cp.key_id not in self._foreign_keys:  # once per key, not at every hello
                self._foreign_keys.add(cp.key_id)
                log.warning("proxy %s reported a checkpoint (seq %d, key %s) not signed by "
                            "this controller's anchor key; such checkpoints are ignored",
                            proxy_id, cp.seq, cp.key_id[:40])
            return None
        with self._lock:
            if cp in self.file.all():  # ours, already checked at start-up and every round
                return self.last
            if self.file.add(cp):
                self.file.save()
        # judged even when older than the file's newest 16 (then it is not kept there)
        return self.check([cp], source=f"proxy:{proxy_id}")

    def _alarm(self, report: AnchorReport, source: str) -> None:
        self.alarm = report
        cp = report.checkpoint
        assert cp is not None
        if self.file.add_evidence(cp):
            self.file.save()
        if (cp.seq, cp.hash) in self._reported:
            return
        self._reported.add((cp.seq, cp.hash))
        log.error("AUDIT TRAIL %s: %s (checkpoint from %s)", report.status.upper(),
                  report.message, source)
        with contextlib.suppress(Exception):  # the alarm stands even if this write fails
            self.audit.append("controller", f"audit.{report.status}", f"seq {cp.seq}", {
                "source": source, "checkpoint": cp.to_dict(), "chain_head": report.chain_head,
                "missing": list(report.missing) if report.missing else None,
                "message": report.message}, now=self.clock())

    def tick(self) -> Checkpoint | None:
        """Sign the head if it moved since the newest checkpoint; None if it did not."""
        with self._lock:
            head = self.audit.head()
            if head is None:
                return None
            last = self.file.newest()
            if last is not None and (last.seq, last.hash) == (head.seq, head.hash):
                return None
            cp = make_checkpoint(self.key, head, self.clock())
            self.file.add(cp)
            self.file.save()
            return cp

    # -- on the event loop ---------------------------------------------------------------------

    def degraded(self) -> list[str]:
        return [] if self.alarm is None else [f"audit trail {self.alarm.status}: "
                                              f"{self.alarm.message}"]

    def status(self) -> dict[str, Any]:
        newest = self.file.newest()
        return {"alarm": None if self.alarm is None else self.alarm.to_dict(),
                "newestCheckpoint": None if newest is None else newest.to_dict()}

    def observe_soon(self, wire: fleet_protocol.Checkpoint, proxy_id: str) -> None:
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self.observe, wire, proxy_id))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("checking a proxy's audit checkpoint failed: %s", task.exception())

    async def run(self, fleet: CheckpointSink) -> None:
        """Until cancelled, every `interval_s`: check the database against the checkpoints
        (a cut made while the controller runs shows within a round), then checkpoint the
        head if it moved and push it to the fleet."""
        newest = self.file.newest()
        if newest is not None:
            fleet.send_checkpoint(to_wire(newest))
        while True:
            try:
                await asyncio.to_thread(self.check)
                cp = await asyncio.to_thread(self.tick)
            except Exception as exc:  # a full disk or a lost database: try again later
                log.error("audit checkpoint failed: %s", exc)
                cp = None
            if cp is not None:
                fleet.send_checkpoint(to_wire(cp))
            await asyncio.sleep(self.interval_s)
