"""The proxy snapshot as frozen dataclasses: one class per JSON object of snapshot.schema.json.

Python names are the snake_case of the JSON camelCase names. Every list is a tuple so a
snapshot (and, in particular, an authorization policy) is immutable; policies and their parts
are hashable so callers (the plan) can group identical ones. `version` is not a field: it is
derived from the content (see `canonical.snapshot_version`). `revision` is carried next to the
content and is not hashed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Protocol = Literal["http", "tcp"]
MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
Action = Literal["ALLOW", "DENY", "AUDIT"]
LbPolicy = Literal["round_robin", "least_request", "random", "consistent_hash"]
TlsMode = Literal["DISABLE", "MUTUAL"]
RetryOn = Literal["5xx", "gateway-error", "connect-failure", "reset", "retriable-4xx"]

PROTOCOLS: tuple[Protocol, ...] = ("http", "tcp")
MTLS_MODES: tuple[MtlsMode, ...] = ("STRICT", "PERMISSIVE", "DISABLE")
ACTIONS: tuple[Action, ...] = ("ALLOW", "DENY", "AUDIT")
LB_POLICIES: tuple[LbPolicy, ...] = ("round_robin", "least_request", "random", "consistent_hash")
TLS_MODES: tuple[TlsMode, ...] = ("DISABLE", "MUTUAL")
RETRY_ON: tuple[RetryOn, ...] = (
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-4xx",
)


def _empty_map() -> Mapping[str, str]:
    return {}


# --- identity ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """The proxy's own workload identity. All optional: without it the proxy is plaintext only."""

    spiffe_id: str | None = None  # spiffe://<trust-domain>/ns/<ns>/sa/<sa>
    certificate_pem: str | None = None  # leaf first, then intermediates
    private_key_pem: str | None = None
    trust_bundle_pem: str | None = None  # CA certificates peers are verified against


# --- authorization (Istio security.istio.io/v1 AuthorizationPolicy, field for field) ------


@dataclass(frozen=True, slots=True)
class Source:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()  # strings, as in Istio ("8080")
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Condition:
    key: str  # request.headers[<name>] | source.ip | remote.ip | source.namespace | ...
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """from (JSON `from: [{source: ...}]`), to (`to: [{operation: ...}]`) and when, ANDed."""

    sources: tuple[Source, ...] = ()
    operations: tuple[Operation, ...] = ()
    when: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    name: str  # "<namespace>/<name>" of the source document; used in decisions and logs
    action: Action = "ALLOW"
    rules: tuple[Rule, ...] = ()


# --- inbound ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboundListener:
    port: int  # the port the proxy listens on
    local_address: str  # host:port of the local app
    protocol: Protocol = "http"
    mtls_mode: MtlsMode = "STRICT"
    bind_address: str = "0.0.0.0"
    # The port callers address (the Service port). Used as destination.port in authorization.
    # None: the port of local_address.
    service_port: int | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    service: str
    namespace: str
    listeners: tuple[InboundListener, ...] = ()
    policies: tuple[AuthorizationPolicy, ...] = ()
    default_deny: bool = False  # Mesh authorization default deny: an implicit ALLOW with no rules


# --- outbound (HTTP) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathMatch:
    """Exactly one of exact | prefix | regex (RE2, full match). Matched on the path without query."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """name + exactly one of exact | prefix | regex | present (false = must be absent)."""

    name: str
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    present: bool | None = None


@dataclass(frozen=True, slots=True)
class QueryParamMatch:
    """name + exactly one of exact | regex | present. Matched on the first decoded value."""

    name: str
    exact: str | None = None
    regex: str | None = None
    present: bool | None = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """All given conditions must hold; an empty match matches every request."""

    path: PathMatch | None = None
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    cluster: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int  # retries after the first try
    per_try_timeout_ms: int | None = None
    retry_on: tuple[RetryOn, ...] = ("5xx", "connect-failure", "reset")


@dataclass(frozen=True, slots=True)
class FaultDelay:
    fixed_ms: int
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class FaultAbort:
    http_status: int
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Fault:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True, slots=True)
class Mirror:
    cluster: str
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    add: Mapping[str, str] = field(default_factory=_empty_map)  # appended
    set: Mapping[str, str] = field(default_factory=_empty_map)  # replaces every existing value
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    clusters: tuple[WeightedCluster, ...]
    match: RouteMatch = field(default_factory=RouteMatch)
    name: str | None = None
    timeout_ms: int | None = None  # overall, including retries; None = no timeout
    retries: RetryPolicy | None = None
    fault: Fault | None = None
    mirror: Mirror | None = None
    request_headers: HeaderEdits | None = None
    response_headers: HeaderEdits | None = None


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]  # Host header values: "cart", "cart.shop", "cart.shop:8080", "*"
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class Outbound:
    port: int
    bind_address: str = "127.0.0.1"
    virtual_hosts: tuple[VirtualHost, ...] = ()


@dataclass(frozen=True, slots=True)
class TcpListener:
    port: int
    cluster: str
    bind_address: str = "127.0.0.1"


# --- clusters -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str  # host:port; IPv6 as [addr]:port
    weight: int = 1
    labels: Mapping[str, str] = field(default_factory=_empty_map)


@dataclass(frozen=True, slots=True)
class HashKey:
    """For consistent_hash: exactly one of header | cookie | source_ip."""

    header: str | None = None
    cookie: str | None = None
    source_ip: bool | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests_per_connection: int = 0  # 0 = unlimited
    connect_timeout_ms: int = 1000


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx: int = 5
    interval_ms: int = 10000
    base_ejection_time_ms: int = 30000
    max_ejection_percent: float = 10.0


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    mode: TlsMode = "MUTUAL"
    sni: str | None = None
    # The peer must present one of these URI SANs (spiffe://...). Empty: any ID the trust bundle
    # vouches for.
    peer_spiffe_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    endpoints: tuple[Endpoint, ...] = ()
    protocol: Protocol = "http"
    lb_policy: LbPolicy = "round_robin"
    hash_key: HashKey | None = None
    connection_pool: ConnectionPool = field(default_factory=ConnectionPool)
    outlier_detection: OutlierDetection | None = None
    tls: UpstreamTls | None = None


# --- telemetry ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Telemetry:
    tracing_sampling_percent: float = 1.0
    access_log_sampling_percent: float = 100.0
    stats_interval_seconds: float = 1.0


# --- the snapshot -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    identity: Identity | None = None
    inbound: Inbound | None = None
    outbound: Outbound | None = None
    tcp: tuple[TcpListener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    telemetry: Telemetry = field(default_factory=Telemetry)
    # The commit the snapshot was rendered from. Metadata carried next to the content: NOT part
    # of the hashed content, so a commit that changes nothing for a proxy leaves its version alone.
    revision: str | None = None
