"""The Prometheus provider against a real Prometheus (Debian's) scraping two targets that
serve the proxies' own metrics code (`proxy_runtime.metrics`): the numbers the provider
reads back are the numbers the targets counted."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_process import PrometheusProcess, require_prometheus

from proxy_runtime.metrics import MetricsExporter, Stats
from reconciler.analysis import LATENCY_BUCKETS, Outcome, Sample, judge
from reconciler.analysis.prometheus import PrometheusError, PrometheusProvider, matcher
from reconciler.analysis.stats import histogram_quantile
from reconciler.language.model import Analysis


class Target:
    """A /metrics endpoint backed by a proxy's Stats (a lock keeps scrapes and updates apart)."""

    def __init__(self, proxy_id: str = "", service: str = "") -> None:
        self.stats = Stats()
        self.stats.proxy_id, self.stats.service = proxy_id, service  # as the agent sets them
        self.exporter = MetricsExporter(self.stats)
        self.lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with target.lock:
                    body = target.exporter.render()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def serve(self, ok: int, e5: int = 0, denied: int = 0, latency: float = 0.02,
              connect_failures: int = 0) -> None:
        now = time.time()
        with self.lock:
            for _ in range(ok):
                self.stats.record("inbound", "shop/web", "shop/cart", 200, latency, now)
            for _ in range(e5):
                self.stats.record("inbound", "shop/web", "shop/cart", 503, latency * 2, now)
            for _ in range(denied):
                self.stats.record_denied("inbound", "shop/web", "shop/cart", now)
                self.stats.record("inbound", "shop/web", "shop/cart", 403, 0.0005, now)
            for _ in range(connect_failures):
                self.stats.connect_failed("outbound|80||db.shop", now)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Target, Target]]:
    require_prometheus()
    canary, baseline = Target("web.shop-0", "web.shop"), Target("web.shop-1", "web.shop")
    prom = PrometheusProcess(tmp_path_factory.mktemp("prom"), _free_port(),
                             [canary.instance, baseline.instance])
    try:
        yield prom.wait_ready().url, canary, baseline
    finally:
        prom.stop()
        canary.close()
        baseline.close()


def _wait_scraped(prom: PrometheusProvider, target: Target, requests: int) -> float:
    """Wait until Prometheus holds `requests` as the target's request count; return the
    timestamp of that scrape (so no later scrape can be counted as of it)."""
    sel = f'{{instance="{target.instance}"}}'
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = time.time()
        rows = prom.query(f"sum(mesh_requests_total{sel})", now)
        if rows and rows[0][1] == requests:
            stamp = prom.query(f"max(timestamp(mesh_requests_total{sel}))", now)
            # Let any scrape that started before that moment finish before serving more.
            time.sleep(0.3)
            return stamp[0][1]
        time.sleep(0.2)
    raise AssertionError(f"Prometheus never saw {requests} requests from {target.instance}")


def test_provider_reads_back_what_the_targets_served(setup: tuple[str, Target, Target]) -> None:
    url, canary, baseline = setup
    prom = PrometheusProvider(url)
    # Before: some history the window must not count.
    canary.serve(ok=50, e5=1)
    baseline.serve(ok=80)
    t0 = max(_wait_scraped(prom, canary, 51), _wait_scraped(prom, baseline, 80))
    # The window: the canary's new config fails and denies; the baseline stays healthy.
    canary.serve(ok=300, e5=30, denied=20, latency=0.3, connect_failures=4)
    baseline.serve(ok=400, e5=2, latency=0.02)
    t1 = max(_wait_scraped(prom, canary, 51 + 350), _wait_scraped(prom, baseline, 482))

    c = prom.sample({"instance": [canary.instance]}, t0, t1)
    b = prom.sample({"instance": [baseline.instance]}, t0, t1)
    assert c.requests == (300, 0, 20, 30)
    assert c.denials == 20 and c.connection_failures == 4
    assert b.requests == (400, 0, 0, 2) and b.denials == 0 and b.connection_failures == 0
    # Latency buckets: 300 ok at 0.3 s -> (0.25, 0.5]; 30 errors at 0.6 s -> (0.5, 1]; 20
    # denials at 0.5 ms -> (0, 0.001].
    want = [0] * (len(LATENCY_BUCKETS) + 1)
    want[0], want[8], want[9] = 20, 300, 30
    assert list(c.latency_buckets) == want
    assert c.latency_sum == pytest.approx(300 * 0.3 + 30 * 0.6 + 20 * 0.0005, rel=1e-6)
    both = prom.sample({"instance": [canary.instance, baseline.instance]}, t0, t1)
    assert both.requests == (700, 0, 20, 32)

    # Prometheus' histogram_quantile and the judge's interpolation agree.
    p99 = prom.p99_ms({"instance": [canary.instance]}, t0, t1)
    ours = histogram_quantile(0.99, LATENCY_BUCKETS, c.latency_buckets)
    assert p99 is not None and ours is not None
    assert p99 == pytest.approx(ours * 1000, rel=1e-9)

    # And the judge, fed from Prometheus, fails the canary.
    v = judge(c, b, Analysis())
    assert v.outcome is Outcome.FAILED
    assert {x.name for x in v.checks if x.failed} >= {"error_rate", "error_rate_vs_baseline",
                                                       "denial_rate_vs_baseline"}

    # Per-step windows from a range query add up to the same counts.
    wins = prom.windows({"instance": [canary.instance]}, t0, t1, step=1.0)
    assert sum(w["requests"]["5xx"] for w in wins) == 30
    assert Sample.of(wins).total == 350
    prom.close()


def test_provider_errors(setup: tuple[str, Target, Target]) -> None:
    url, _, _ = setup
    prom = PrometheusProvider(url)
    with pytest.raises(PrometheusError, match="query refused"):
        prom.query("sum(", time.time())
    with pytest.raises(ValueError):
        prom.sample({"instance": ["x"]}, 10.0, 5.0)
    dead = PrometheusProvider(f"http://127.0.0.1:{_free_port()}", timeout=1.0)
    with pytest.raises(PrometheusError, match="cannot reach"):
        dead.query("up", time.time())


def test_matcher_quotes_and_escapes() -> None:
    assert matcher({"instance": ["10.0.0.1:9090", "a|b"]}) == r'{instance=~"10\\.0\\.0\\.1:9090|a\\|b"}'
    assert matcher({"proxy": "web-.*"}, {"direction": "inbound"}) == \
        '{proxy=~"web-.*",direction="inbound"}'
    with pytest.raises(ValueError):
        matcher({"bad-label": ["x"]})
    with pytest.raises(ValueError):
        matcher({"instance": []})


def test_windows_by_proxy_joins_on_the_proxy_id_of_the_info_metric(
        setup: tuple[str, Target, Target]) -> None:
    url, canary, baseline = setup
    prom = PrometheusProvider(url)
    base_c = sum(canary.stats.requests.values())
    base_b = sum(baseline.stats.requests.values())
    t0 = max(_wait_scraped(prom, canary, base_c), _wait_scraped(prom, baseline, base_b))
    # the canary gets a new config (the info metric's version changes mid-range: the join
    # must not become many-to-many) and fails; the baseline stays healthy
    with canary.lock:
        canary.stats.config_version, canary.stats.config_revision = "v2", "r2"
    canary.serve(ok=120, e5=40, denied=5, latency=0.3, connect_failures=3)
    baseline.serve(ok=200, e5=1)
    t1 = max(_wait_scraped(prom, canary, base_c + 165), _wait_scraped(prom, baseline, base_b + 201))

    got = prom.windows_by_proxy(["web.shop-0", "web.shop-1", "web.shop-9"], t0, t1, step=1.0)
    assert sorted(got) == ["web.shop-0", "web.shop-1"]  # nothing of a proxy it does not hold
    c, b = Sample.of(got["web.shop-0"]), Sample.of(got["web.shop-1"])
    assert c.requests == (120, 0, 5, 40) and c.denials == 5 and c.connection_failures == 3
    assert b.requests == (200, 0, 0, 1) and b.denials == 0 and b.connection_failures == 0
    want = [0] * (len(LATENCY_BUCKETS) + 1)
    want[0], want[8], want[9] = 5, 120, 40
    assert list(c.latency_buckets) == want
    assert c.latency_sum == pytest.approx(120 * 0.3 + 40 * 0.6 + 5 * 0.0005, rel=1e-6)
    # one window per step, `second` = the step's start, in the agent's format
    for wins in got.values():
        seconds = [w["second"] for w in wins]
        assert seconds == sorted(set(seconds)) and seconds[0] == int(t0)
        assert all(Sample.from_window(w).seconds == 1 for w in wins)
    # the same numbers as selecting by instance
    by_instance = Sample.of(prom.windows({"instance": [canary.instance]}, t0, t1))
    assert by_instance.requests == c.requests and by_instance.latency_buckets == c.latency_buckets
    # only the proxies asked for, and none at all for an empty list
    only = prom.windows_by_proxy(["web.shop-1"], t0, t1)
    assert list(only) == ["web.shop-1"] and Sample.of(only["web.shop-1"]) == b
    assert prom.windows_by_proxy([], t0, t1) == {}
    # direction: these targets count inbound requests only
    outbound = PrometheusProvider(url, direction="outbound")
    assert Sample.of(outbound.windows_by_proxy(["web.shop-0"], t0, t1).get("web.shop-0", [])
                     ).total == 0
    outbound.close()
    prom.close()
