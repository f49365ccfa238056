"""Envoy's stats flushes (metrics service, one a second) into the per-second window the canary
judge reads. Pure: samples in, a delta out; the caller adds it to the window at the second the
flush arrived.

What is read (full stat names; `emit_tags_as_labels` off):
- `http.<prefix>.downstream_rq_{2,3,4,5}xx`: requests by status class (counters, sent as
  deltas), for the connection managers meshcd names (`inbound_<port>`, `outbound`);
- `http.<prefix>.rbac.denied`: requests an RBAC filter refused (denials); on TCP listeners
  `inbound_<port>_rbac.rbac.denied`: connections refused;
- `cluster.<name>.upstream_cx_connect_fail`: connect failures (not the agent's own clusters);
- `http.<prefix>.downstream_rq_time`: the latency histogram (ms), whose buckets Envoy is told
  to keep at the window's bounds (bootstrap `histogram_bucket_settings`). The metrics service
  sends histograms per flush interval (seen on Envoy 1.40: a quiet second reads 0), like the
  counters, so nothing is subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy_runtime.stats_window import CLASSES, LATENCY_BUCKETS, StatsWindow

LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(round(b * 1000, 6) for b in LATENCY_BUCKETS)
_AGENT_CLUSTERS = ("cluster.meshcd_",)


@dataclass(frozen=True, slots=True)
class Histogram:
    count: int
    sum: float  # ms
    buckets: tuple[tuple[float, int], ...]  # (upper bound ms, cumulative count)


Sample = float | Histogram


def _meshcd_hcm(prefix: str) -> bool:
    return prefix.startswith("inbound_") or prefix == "outbound"


@dataclass
class WindowDelta:
    classes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    denials: int = 0
    connection_failures: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0  # seconds

    def empty(self) -> bool:
        return not (any(self.classes.values()) or self.denials or self.connection_failures
                    or any(self.latency_buckets))


def _per_bucket(h: Histogram) -> list[int]:
    """Counts per window bucket (the last is +Inf) from Envoy's cumulative buckets."""
    out = [0] * (len(LATENCY_BUCKETS) + 1)
    cumulative = {round(ub, 6): c for ub, c in h.buckets}
    below = 0
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        at = cumulative.get(bound, below)
        out[i] = max(0, at - below)
        below = max(below, at)
    out[-1] = max(0, h.count - below)
    return out


def read_flush(samples: dict[str, Sample]) -> WindowDelta:
    """One flush's samples (counters as deltas, histograms per interval) as a window delta."""
    d = WindowDelta()
    for name, value in samples.items():
        if name.startswith("http."):
            prefix, _, stat = name[5:].partition(".")
            if not _meshcd_hcm(prefix):
                continue
            if isinstance(value, Histogram):
                if stat == "downstream_rq_time":
                    for i, n in enumerate(_per_bucket(value)):
                        d.latency_buckets[i] += n
                    d.latency_sum += value.sum / 1000.0
            elif stat.startswith("downstream_rq_") and stat.endswith("xx"):
                cls = stat[len("downstream_rq_"):]
                if cls in d.classes:
                    d.classes[cls] += int(value)
            elif stat == "rbac.denied":
                d.denials += int(value)
        elif name.startswith("inbound_") and name.endswith("_rbac.rbac.denied"):
            if not isinstance(value, Histogram):
                d.denials += int(value)
        elif (name.startswith("cluster.") and name.endswith(".upstream_cx_connect_fail")
              and not name.startswith(_AGENT_CLUSTERS) and not isinstance(value, Histogram)):
            d.connection_failures += int(value)
    return d


def add_to_window(window: StatsWindow, now: float, d: WindowDelta) -> None:
    """Add one flush's delta to the window's slot for `now`."""
    if d.empty():
        return
    slot = window._slot(now)  # the window's own per-second slot (stats_window.py)
    for cls, n in d.classes.items():
        slot.classes[cls] += n
    slot.denials += d.denials
    slot.connection_failures += d.connection_failures
    for i, n in enumerate(d.latency_buckets):
        slot.latency_buckets[i] += n
    slot.latency_sum += d.latency_sum
