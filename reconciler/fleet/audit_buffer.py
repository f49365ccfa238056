"""Audit records from the fleet listener, appended in bursts off the event loop.

Ten thousand proxies reconnecting must not mean ten thousand fsyncs on the loop: records are
queued and written by `flush()` with one `append_many` in a worker thread. Each record keeps
the instant of its event in `data["at"]` (the burst shares one record time).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from reconciler.audit import AuditEntry, AuditLog
from reconciler.errors import MeshcdError

log = logging.getLogger("meshcd.fleet")

MAX_PENDING = 100_000  # past this, records are dropped and counted (the store is down)
BATCH = 500  # records per transaction: bounds the transient memory of a reconnect storm


class AuditBuffer:
    def __init__(self, audit: AuditLog | None) -> None:
        self.audit = audit
        self.pending: list[AuditEntry] = []
        self.dropped = 0
        self._lock = asyncio.Lock()

    def add(self, actor: str, kind: str, subject: str, data: dict[str, Any], at: datetime) -> None:
        if self.audit is None:
            return
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        stamped = dict(data)
        stamped["at"] = at.isoformat().replace("+00:00", "Z")
        self.pending.append(AuditEntry(actor=actor, kind=kind, subject=subject, data=stamped))

    async def flush(self, now: datetime) -> None:
        if self.audit is None or not self.pending:
            return
        async with self._lock:
            while self.pending:
                batch, self.pending = self.pending[:BATCH], self.pending[BATCH:]
                try:
                    await asyncio.to_thread(self.audit.append_many, batch, now=now,
                                            oversize="truncate")
                except Exception as exc:
                    log.error("cannot append %d fleet audit records: %s", len(batch), exc)
                    if isinstance(exc, MeshcdError) and exc.temporary:  # the store may be back next time
                        self.pending[:0] = batch
                        return
                    self.dropped += len(batch)
