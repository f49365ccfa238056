"""Proxy metrics. The hot path only bumps plain dict counters (`Stats.record`); the
Prometheus text is rendered on scrape by a custom collector, so a request costs a few dict
operations and no prometheus-client locks."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from typing import Any

from proxy_runtime.stats_window import LATENCY_BUCKETS, StatsWindow

_bisect = bisect.bisect_left
# key: (direction, source workload, destination workload, response class)
Key = tuple[str, str, str, str]
_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
# response class by status // 100 (0-9); anything else is 5xx, as _CLASS.get(.., "5xx") says
_CLASS_OF = ("5xx", "1xx", "2xx", "3xx", "4xx", "5xx", "5xx", "5xx", "5xx", "5xx")
_N_BUCKETS = len(LATENCY_BUCKETS) + 1
_COUNT = _N_BUCKETS + 1  # index of the request count in a durations entry


class Stats:
    """Counters of one proxy process, plus the rolling per-second window."""

    def __init__(self, window_seconds: int = 60) -> None:
        # per key: bucket counts (len(LATENCY_BUCKETS)+1, last is +Inf), the sum of the
        # durations and the request count: one dict lookup per request
        self.durations: dict[Key, list[float]] = {}
        self.denied: dict[tuple[str, str, str], int] = {}
        self.upstream_connections: dict[str, int] = {}
        self.upstream_connect_failures: dict[str, int] = {}
        self.ejections: dict[str, int] = {}
        self.overflows: dict[tuple[str, str], int] = {}
        self.window = StatsWindow(window_seconds)
        self.config_version = ""
        self.config_revision = ""
        self.config_applied_at = 0.0
        self.nacks = 0
        # Who this proxy is, on `mesh_config_info` (so Prometheus data can be attributed to
        # proxy ids without relabelling); set by the agent once it knows its identity.
        self.proxy_id = ""
        self.service = ""  # "name.namespace"

    def record(self, direction: str, source: str, destination: str, status: int,
               seconds: float, now: float) -> None:
        cls = _CLASS_OF[status // 100] if 0 <= status < 1000 else "5xx"
        key = (direction, source, destination, cls)
        hist = self.durations.get(key)
        if hist is None:
            hist = self.durations[key] = [0] * _N_BUCKETS + [0.0, 0]
        bucket = _bisect(LATENCY_BUCKETS, seconds)
        hist[bucket] += 1
        hist[_N_BUCKETS] += seconds
        hist[_COUNT] += 1
        window = self.window
        slot = window._last if int(now) == window._last_second else window._slot(now)
        if cls != "1xx":
            slot.classes[cls] += 1
        slot.latency_buckets[bucket] += 1
        slot.latency_sum += seconds

    @property
    def requests(self) -> dict[Key, int]:
        """Requests by key (direction, source, destination, response class)."""
        return {key: int(hist[_COUNT]) for key, hist in self.durations.items()}

    def record_denied(self, direction: str, source: str, destination: str, now: float) -> None:
        key = (direction, source, destination)
        self.denied[key] = self.denied.get(key, 0) + 1
        self.window.record_denial(now)

    def connection_opened(self, cluster: str) -> None:
        self.upstream_connections[cluster] = self.upstream_connections.get(cluster, 0) + 1

    def connect_failed(self, cluster: str, now: float) -> None:
        self.upstream_connect_failures[cluster] = self.upstream_connect_failures.get(cluster, 0) + 1
        self.window.record_connection_failure(now)

    def ejected(self, cluster: str) -> None:
        self.ejections[cluster] = self.ejections.get(cluster, 0) + 1

    def overflowed(self, cluster: str, limit: str) -> None:
        key = (cluster, limit)
        self.overflows[key] = self.overflows.get(key, 0) + 1


class _Collector:
    def __init__(self, stats: Stats) -> None:
        import psutil

        self.stats = stats
        self.process = psutil.Process(os.getpid())

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        s = self.stats
        labels = ["direction", "source_workload", "destination_workload", "response_class"]
        req = CounterMetricFamily("mesh_requests", "Requests proxied, by outcome class.", labels=labels)
        for key, n in s.requests.items():
            req.add_metric(list(key), n)
        yield req
        hist = HistogramMetricFamily(
            "mesh_request_duration_seconds", "Request duration seen by the proxy.", labels=labels
        )
        for key, counts in s.durations.items():
            cumulative = 0.0
            buckets = []
            for bound, count in zip([*LATENCY_BUCKETS, float("inf")], counts[:_N_BUCKETS], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
            hist.add_metric(list(key), buckets, counts[_N_BUCKETS])
        yield hist
        den = CounterMetricFamily(
            "mesh_requests_denied", "Requests denied by authorization.",
            labels=["direction", "source_workload", "destination_workload"],
        )
        for dkey, n in s.denied.items():
            den.add_metric(list(dkey), n)
        yield den
        for name, doc, data in (
            ("mesh_upstream_connections", "Upstream connections opened.", s.upstream_connections),
            ("mesh_upstream_connect_failures", "Upstream connection failures.", s.upstream_connect_failures),
            ("mesh_upstream_ejections", "Endpoints ejected by outlier detection.", s.ejections),
        ):
            fam = CounterMetricFamily(name, doc, labels=["cluster"])
            for cluster, n in data.items():
                fam.add_metric([cluster], n)
            yield fam
        ovf = CounterMetricFamily(
            "mesh_upstream_overflows", "Requests refused by a circuit-breaker limit.",
            labels=["cluster", "limit"],
        )
        for okey, n in s.overflows.items():
            ovf.add_metric(list(okey), n)
        yield ovf
        nack = CounterMetricFamily("mesh_config_nacks", "Snapshots rejected.")
        nack.add_metric([], s.nacks)
        yield nack
        info = InfoMetricFamily("mesh_config", "The applied config snapshot.")
        info.add_metric([], {"version": s.config_version, "revision": s.config_revision,
                             "proxy_id": s.proxy_id, "service": s.service})
        yield info
        applied = GaugeMetricFamily("mesh_config_applied_timestamp_seconds", "When the snapshot was applied.")
        applied.add_metric([], s.config_applied_at)
        yield applied
        with self.process.oneshot():
            mem = self.process.memory_info()
            cpu = self.process.cpu_times()
        rss = GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.")
        rss.add_metric([], float(mem.rss))
        yield rss
        cpu_fam = CounterMetricFamily("process_cpu_seconds", "User and system CPU time spent.")
        cpu_fam.add_metric([], cpu.user + cpu.system)
        yield cpu_fam
        start = GaugeMetricFamily("process_start_time_seconds", "Start time since the epoch.")
        start.add_metric([], self.process.create_time())
        yield start


class MetricsExporter:
    """Prometheus text for /metrics. prometheus-client and psutil are imported on the first
    scrape, so a proxy nobody scrapes does not carry them (about 2 MB of RSS)."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.registry: Any = None

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self.registry is None:
            self.registry = CollectorRegistry(auto_describe=False)
            self.registry.register(_Collector(self.stats))
        return bytes(generate_latest(self.registry))

