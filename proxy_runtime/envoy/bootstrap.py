"""The bootstrap the agent writes for its Envoy (pure: data in, a dict out).

Admin on 127.0.0.1 only; ADS (CDS, EDS, LDS, RDS), SDS and the stats sink (Envoy's metrics
service, flushed every second) all reach the agent over one Unix socket (`pipe`), gRPC over
HTTP/2; node id = proxy id. The bootstrap holds no certificate and no key: those come over SDS. Stats are limited to what the judge and
the dashboards read (stats_matcher), and hot restart is off (`envoy_args`), so Envoy takes no
shared memory.
"""

from __future__ import annotations

from typing import Any

from proxy_runtime.envoy.stats_sink import LATENCY_BOUNDS_MS
from proxy_runtime.envoy.translate import SDS_CLUSTER, XDS_CLUSTER, socket_address

_H2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}},
}}

# The stats Envoy keeps: what the judge reads (stats_sink.py) and what a dashboard of
# Envoy's own /stats/prometheus shows (requests, latency, connections, ejections, overflows).
STATS_KEPT = (
    r"^http\.(inbound_[0-9]+|outbound)\.(downstream_rq_([1-5]xx|total|time|active)|rbac\..+)$",
    r"^cluster\..+\.(upstream_cx_(connect_fail|total|active)|upstream_rq_([1-5]xx|total|time|"
    r"timeout|retry|pending_overflow)|outlier_detection\.ejections_enforced_total)$",
    r"^listener\..+\.downstream_cx_(total|active)$",
    r"^inbound_[0-9]+_rbac\.rbac\.denied$",
    r"^tcp\..+\.downstream_cx_(total|rx_bytes_total|tx_bytes_total)$",
    r"^server\.(live|uptime|memory_allocated|memory_heap_size|concurrency|total_connections)$",
    r"^control_plane\..+$",
)


def _agent_cluster(name: str, socket_path: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": _H2,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}]},
    }


def bootstrap(*, proxy_id: str, service: str, socket_path: str, admin_port: int = 0,
              stats_flush_seconds: float = 1.0) -> dict[str, Any]:
    ads = {"api_type": "GRPC", "transport_api_version": "V3",
           "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
           "set_node_on_first_message_only": True}
    return {
        "node": {"id": proxy_id, "cluster": service},
        "admin": {"address": socket_address("127.0.0.1", admin_port)},
        "dynamic_resources": {
            "ads_config": ads,
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [_agent_cluster(XDS_CLUSTER, socket_path),
                                          _agent_cluster(SDS_CLUSTER, socket_path)]},
        "stats_flush_interval": f"{stats_flush_seconds:.3f}s",
        "stats_sinks": [{"name": "envoy.stat_sinks.metrics_service", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": XDS_CLUSTER}},
            "report_counters_as_deltas": True,
            "emit_tags_as_labels": False,
            "histogram_emit_mode": "HISTOGRAM",
        }}],
        "stats_config": {
            "stats_matcher": {"inclusion_list": {"patterns": [
                {"safe_regex": {"regex": r}} for r in STATS_KEPT]}},
            "histogram_bucket_settings": [{
                "match": {"safe_regex": {"regex": r"^http\..+\.downstream_rq_time$"}},
                "buckets": list(LATENCY_BOUNDS_MS)}],
        },
    }


def envoy_args(config_path: str, admin_address_path: str, *, concurrency: int,
               log_level: str = "warning", drain_seconds: float = 10.0) -> list[str]:
    """Envoy's command line (after the binary)."""
    return ["-c", config_path, "--admin-address-path", admin_address_path,
            "--disable-hot-restart", "--concurrency", str(concurrency),
            "--log-level", log_level, "--drain-strategy", "immediate",
            "--drain-time-s", str(max(1, round(drain_seconds)))]
