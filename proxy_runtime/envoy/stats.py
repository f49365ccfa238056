"""One Envoy access-log record (from the access-log service) into the proxy's stats: the
per-second window the canary judge reads and the Prometheus counters. Pure: the record
carries its own time (Envoy's wall clock at the request's end)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy_runtime.metrics import Stats

DENIED_PREFIX = "rbac_access_denied"  # response_code_details of a request RBAC refused


@dataclass(frozen=True, slots=True)
class LogEntry:
    direction: str  # inbound | outbound
    destination: str  # the upstream cluster (or the log name when there was none)
    status: int  # 0: no response was sent (reset)
    seconds: float
    end: float  # wall-clock seconds
    details: str = ""
    connect_failure: bool = False
    source: str = ""


def record_entry(stats: Stats, e: LogEntry) -> None:
    if e.details.startswith(DENIED_PREFIX):
        stats.record_denied(e.direction, e.source, e.destination, e.end)
    if e.connect_failure:
        stats.connect_failed(e.destination, e.end)
    stats.record(e.direction, e.source, e.destination, e.status or 500, e.seconds, e.end)
