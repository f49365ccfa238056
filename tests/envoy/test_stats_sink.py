"""Envoy's stats flushes into the judge's per-second window (pure part)."""

from __future__ import annotations

from proxy_runtime.envoy.stats_sink import LATENCY_BOUNDS_MS, Histogram, add_to_window, read_flush
from proxy_runtime.stats_window import StatsWindow


def _hist(*per_bucket_ms: tuple[float, int], over: int = 0, total_ms: float = 0.0) -> Histogram:
    cumulative, running = [], 0
    counts = dict(per_bucket_ms)
    for bound in LATENCY_BOUNDS_MS:
        running += counts.get(bound, 0)
        cumulative.append((bound, running))
    return Histogram(running + over, total_ms, tuple(cumulative))


def test_one_flush_becomes_one_seconds_worth_of_window() -> None:
    d = read_flush({
        "http.inbound_8080.downstream_rq_2xx": 7.0,
        "http.inbound_8080.downstream_rq_4xx": 2.0,
        "http.outbound.downstream_rq_5xx": 1.0,
        "http.outbound.downstream_rq_1xx": 4.0,  # not a class the judge reads
        "http.admin.downstream_rq_2xx": 50.0,  # Envoy's admin: not a meshcd listener
        "http.inbound_8080.rbac.denied": 1.0,
        "inbound_5432_rbac.rbac.denied": 1.0,  # a TCP listener's connection refused
        "cluster.cart.shop.upstream_cx_connect_fail": 3.0,
        "cluster.meshcd_xds.upstream_cx_connect_fail": 9.0,  # the agent's own: not counted
        "http.inbound_8080.downstream_rq_time": _hist((1.0, 5), (250.0, 3), over=1, total_ms=20000),
        "http.outbound.downstream_rq_time": _hist((5.0, 1), total_ms=4),
    })
    assert d.classes == {"2xx": 7, "3xx": 0, "4xx": 2, "5xx": 1}
    assert (d.denials, d.connection_failures) == (2, 3)
    assert d.latency_buckets[0] == 5 and d.latency_buckets[2] == 1 and d.latency_buckets[7] == 3
    assert d.latency_buckets[-1] == 1 and sum(d.latency_buckets) == 10
    assert abs(d.latency_sum - 20.004) < 1e-9
    w = StatsWindow()
    add_to_window(w, 100.5, d)
    add_to_window(w, 100.9, read_flush({"http.outbound.downstream_rq_2xx": 1.0}))
    (second,) = w.window(101.0, 1)
    assert second["second"] == 100 and second["requests"]["2xx"] == 8
    assert second["denials"] == 2 and second["connection_failures"] == 3


def test_the_window_bounds_are_what_envoy_is_told_to_keep() -> None:
    from proxy_runtime.envoy.bootstrap import bootstrap

    b = bootstrap(proxy_id="p", service="s.n", socket_path="/x")
    (setting,) = b["stats_config"]["histogram_bucket_settings"]
    assert setting["buckets"] == [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
                                  2500.0, 5000.0, 10000.0]
    sink = b["stats_sinks"][0]["typed_config"]
    assert sink["report_counters_as_deltas"] is True and b["stats_flush_interval"] == "1.000s"


def test_bootstrap_admin_is_loopback_and_holds_no_key_material() -> None:
    import json

    from proxy_runtime.envoy.bootstrap import bootstrap, envoy_args
    from proxy_runtime.envoy.supervisor import RESTART_DELAYS, restart_delay

    b = bootstrap(proxy_id="web-1", service="web.shop", socket_path="/run/x/xds.sock")
    assert b["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 0}
    assert b["node"]["id"] == "web-1"
    text = json.dumps(b)
    assert "filename" not in text and "inline" not in text and "PRIVATE KEY" not in text
    pipes = [e["endpoint"]["address"]["pipe"]["path"] for c in b["static_resources"]["clusters"]
             for e in c["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert pipes == ["/run/x/xds.sock", "/run/x/xds.sock"]  # ADS and SDS: only the socket
    args = envoy_args("/c.json", "/a", concurrency=2)
    assert "--disable-hot-restart" in args and "--admin-address-path" in args
    assert restart_delay(0) == 0.0 and restart_delay(99) == RESTART_DELAYS[-1] <= 2.0
