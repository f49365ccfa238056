"""The controller's own /metrics (Prometheus text format), on a registry of its own so two
controllers in one process (tests) do not collide.

Counters and histograms are updated as things happen; revision and proxy counts are read
at scrape time (`sources`), so they can never drift from the store and the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    def __init__(self, revisions: Callable[[], Mapping[str, int]],
                 proxies: Callable[[], Mapping[str, int]],
                 epoch: Callable[[], int], fetch_failures: Callable[[], int]) -> None:
        self.revisions, self.proxies = revisions, proxies
        self.epoch, self.fetch_failures = epoch, fetch_failures

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rev = GaugeMetricFamily("meshcd_revisions", "Revisions by status", labels=["status"])
        for status, n in sorted(self.revisions().items()):
            rev.add_metric([status], n)
        yield rev
        prox = GaugeMetricFamily("meshcd_proxies", "Proxies by ledger state", labels=["state"])
        for state, n in sorted(self.proxies().items()):
            prox.add_metric([state], n)
        yield prox
        yield GaugeMetricFamily("meshcd_leadership_epoch", "Leadership epoch of this process",
                                value=self.epoch())
        yield GaugeMetricFamily("meshcd_fetch_consecutive_failures",
                                "Fetches failed in a row (0 when the last one worked)",
                                value=self.fetch_failures())


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fetches = Counter("meshcd_fetches", "Fetches of the config repo by result",
                               ["result"], registry=self.registry)
        self.reconcile = Histogram(
            "meshcd_reconcile_duration_seconds",
            "Time from a revision's start to its final status (validate, render, plan, deploy)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry)
        self.push_to_ack = Histogram(
            "meshcd_push_to_ack_seconds", "Time from sending a snapshot to the proxy's ACK",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry)
        self.nacks = Counter("meshcd_nacks", "Snapshots refused by proxies",
                             registry=self.registry)
        self.webhooks = Counter("meshcd_webhook_deliveries", "Webhook deliveries by result",
                                ["forge", "result"], registry=self.registry)

    def add_sources(self, *, revisions: Callable[[], Mapping[str, int]],
                    proxies: Callable[[], Mapping[str, int]], epoch: Callable[[], int],
                    fetch_failures: Callable[[], int]) -> None:
        self.registry.register(_Snapshot(revisions, proxies, epoch, fetch_failures))

    def render(self) -> bytes:
        return generate_latest(self.registry)
