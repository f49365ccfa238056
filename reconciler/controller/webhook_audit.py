"""Webhook deliveries into the audit trail, written in bursts off the event loop.

Every delivery that passed verification (accepted, ignored, duplicate, ping) is one
`webhook.delivery` record. A refused one (anyone can send those) is counted by
`reconciler.audit.aggregate.RejectionSummary`: one `webhook.rejected` record per interval,
plus the first few refusals of each interval in full (`sampled: true`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from reconciler.audit import AuditLog
from reconciler.audit.aggregate import RejectionSummary
from reconciler.fleet.audit_buffer import AuditBuffer

FLUSH_S = 0.5


class WebhookAudit:
    def __init__(self, audit: AuditLog, *, clock: Callable[[], datetime], count: Any,
                 forges: tuple[str, ...], interval_s: float = 60.0, samples: int = 5) -> None:
        """`count`: the deliveries counter (labels forge, result); `forges`: the known
        forge names (any other is counted as `unknown`, so the label stays bounded)."""
        self.buffer = AuditBuffer(audit)
        self.rejections = RejectionSummary(interval_s=interval_s, samples=samples)
        self.clock = clock
        self.count = count
        self.forges = forges

    def on_delivery(self, record: Any) -> None:
        """The receiver's audit callback (a `webhooks.model.DeliveryRecord`), on the loop."""
        forge = record.forge if record.forge in self.forges else "unknown"
        self.count.labels(forge, record.result).inc()
        data = {"forge": record.forge, "delivery_id": record.delivery_id,
                "result": record.result, "reason": record.reason, "status": record.status,
                "remote": record.remote_addr, "ref": record.ref, "after": record.after,
                "body_bytes": record.body_bytes}
        now = self.clock()
        if record.result == "rejected":  # counted; only a few per interval recorded in full
            if not self.rejections.observe(record.forge, record.reason, record.remote_addr,
                                           now.timestamp()):
                return
            data["sampled"] = True
        self.buffer.add(f"webhook:{record.forge}", "webhook.delivery",
                        record.delivery_id or "", data, now)

    async def flush(self, *, final: bool = False) -> None:
        """Write what is pending (and the summary of an interval that ended, or of the
        open one when `final`)."""
        now = self.clock()
        summary = self.rejections.due(now.timestamp(), final=final)
        if summary is not None:
            self.buffer.add("webhooks", "webhook.rejected", "webhooks", summary, now)
        await self.buffer.flush(now)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self.flush()

    def status(self) -> dict[str, Any]:
        return self.rejections.pending()
