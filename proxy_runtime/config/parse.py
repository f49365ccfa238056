"""JSON object <-> Snapshot. Parsing checks what snapshot.schema.json says (types, required and
unknown fields, enums, ranges, formats) and reports the first problem with its JSON path.

Hand-written rather than driven by jsonschema: the proxy parses every snapshot it is sent and must
stay small (jsonschema alone costs ~7 MB of RSS). tests/proxy_config check that the schema and
this parser accept and reject the same documents.

Cross-references, regexes and CIDRs are checked by `compile.compile_snapshot`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar, cast

from proxy_runtime.protocol.canonical import compute_version

from .errors import SnapshotError
from .model import (
    ACTIONS,
    LB_POLICIES,
    MTLS_MODES,
    PROTOCOLS,
    RETRY_ON,
    TLS_MODES,
    AuthorizationPolicy,
    Cluster,
    Condition,
    ConnectionPool,
    Endpoint,
    Fault,
    FaultAbort,
    FaultDelay,
    HashKey,
    HeaderEdits,
    HeaderMatch,
    Identity,
    Inbound,
    InboundListener,
    Mirror,
    Operation,
    Outbound,
    OutlierDetection,
    PathMatch,
    QueryParamMatch,
    RetryPolicy,
    Route,
    RouteMatch,
    Rule,
    Snapshot,
    Source,
    TcpListener,
    Telemetry,
    UpstreamTls,
    VirtualHost,
    WeightedCluster,
)

T = TypeVar("T")

# host:port where host is a DNS name, an IPv4 address or [IPv6]; port 0-65535.
_ADDRESS = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?):[0-9]{1,5}$"
)
_BIND = re.compile(r"^(?:[0-9A-Fa-f:.]+|[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?)$")
# RFC 9110 token. `\Z`, not `$`: a `$` also matches before a final "\n" ("x-a\n").
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# CR, LF, NUL and the other controls (HTAB is allowed): a CR or LF in a value we add or set would
# start a new header on the wire.
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_METHOD = _HEADER_NAME
_WHEN_KEY = re.compile(
    r"^(?:request\.headers\[[!#$%&'*+\-.^_`|~0-9A-Za-z]+\]|source\.ip|remote\.ip|source\.namespace"
    r"|source\.principal|destination\.ip|destination\.port|connection\.sni)$"
)
_PORT_STRING = re.compile(r"^[0-9]{1,5}$")
_SPIFFE = re.compile(r"^spiffe://[^/\s]+(/[^\s]*)?$")
_VERSION = re.compile(r"^[0-9a-f]{64}$")
_NONE: tuple[str, ...] = ()


# --- small checked readers ------------------------------------------------------------------


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _obj(value: Any, path: str, required: Sequence[str], optional: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SnapshotError(path, f"expected an object, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str) or (key not in required and key not in optional):
            allowed = ", ".join(sorted([*required, *optional]))
            raise SnapshotError(_at(path, str(key)), f"unknown field (allowed: {allowed})")
    for key in required:
        if key not in value:
            raise SnapshotError(_at(path, key), "required field is missing")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _str(value: Any, path: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
    if not isinstance(value, str):
        raise SnapshotError(path, f"expected a string, got {_kind(value)}")
    if value == "":
        raise SnapshotError(path, "must not be empty")
    if pattern is not None and not pattern.match(value):
        raise SnapshotError(path, f"{value!r} is not {what}")
    return value


def _int(value: Any, path: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SnapshotError(path, f"expected an integer, got {_kind(value)}")
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise SnapshotError(path, f"{value} is out of range ({rng})")
    return value


def _num(value: Any, path: str, lo: float, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SnapshotError(path, f"expected a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise SnapshotError(path, "must be a finite number")
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo:g}..{hi:g}" if hi is not None else f">= {lo:g}"
        raise SnapshotError(path, f"{value:g} is out of range ({rng})")
    return float(value)


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SnapshotError(path, f"expected true or false, got {_kind(value)}")
    return value


def _enum(value: Any, path: str, allowed: Sequence[T]) -> T:
    if not isinstance(value, str) or value not in allowed:
        raise SnapshotError(path, f"{value!r} is not one of {', '.join(map(str, allowed))}")
    return cast(T, value)


def _list(
    value: Any, path: str, item: Callable[[Any, str], T], min_items: int = 0
) -> tuple[T, ...]:
    if not isinstance(value, list):
        raise SnapshotError(path, f"expected an array, got {_kind(value)}")
    if len(value) < min_items:
        raise SnapshotError(path, f"needs at least {min_items} item(s)")
    return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))


def _strs(value: Any, path: str) -> tuple[str, ...]:
    return _list(value, path, lambda v, p: _str(v, p))


def _str_map(
    value: Any, path: str, key_pattern: re.Pattern[str] | None = None, headers: bool = False
) -> dict[str, str]:
    """A string -> string object; `headers`: header names (RFC 9110 tokens) -> header values."""
    if not isinstance(value, dict):
        raise SnapshotError(path, f"expected an object, got {_kind(value)}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if key_pattern is not None and not key_pattern.fullmatch(k):
            raise SnapshotError(_at(path, k), "is not a valid header name")
        if not isinstance(v, str):
            raise SnapshotError(_at(path, k), f"expected a string, got {_kind(v)}")
        if headers:
            bad = _HEADER_VALUE_BAD.search(v)
            if bad is not None:
                raise SnapshotError(
                    _at(path, k), f"header value contains the control character {bad.group()!r}"
                )
        out[k] = v
    return out


def _opt(d: Mapping[str, Any], key: str, path: str, read: Callable[[Any, str], T], default: T) -> T:
    return read(d[key], _at(path, key)) if key in d else default


def _exactly_one(d: Mapping[str, Any], path: str, keys: Sequence[str]) -> None:
    given = [k for k in keys if k in d]
    if len(given) != 1:
        raise SnapshotError(path, f"needs exactly one of {' | '.join(keys)}, got {len(given)}")


def _port(v: Any, p: str) -> int:
    return _int(v, p, 0, 65535)


def _address(v: Any, p: str) -> str:
    s = _str(v, p, _ADDRESS, "host:port")
    if int(s.rsplit(":", 1)[1]) > 65535:
        raise SnapshotError(p, f"{s!r}: port out of range")
    return s


def _bind(v: Any, p: str) -> str:
    return _str(v, p, _BIND, "an IP address or host name")


def _ms(v: Any, p: str) -> int:
    return _int(v, p, 0)


def _percent(v: Any, p: str) -> float:
    return _num(v, p, 0.0, 100.0)


# --- readers per object -----------------------------------------------------------------------


def _identity(v: Any, p: str) -> Identity:
    keys = ("spiffeId", "certificatePem", "privateKeyPem", "trustBundlePem")
    d = _obj(v, p, (), keys)
    spiffe = _opt(d, "spiffeId", p, lambda x, q: _str(x, q, _SPIFFE, "a spiffe:// URI"), None)
    return Identity(
        spiffe_id=spiffe,
        certificate_pem=_opt(d, "certificatePem", p, _str, None),
        private_key_pem=_opt(d, "privateKeyPem", p, _str, None),
        trust_bundle_pem=_opt(d, "trustBundlePem", p, _str, None),
    )


_SOURCE_KEYS = (
    "principals",
    "notPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
)
_OPERATION_KEYS = (
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
)


def _source(v: Any, p: str) -> Source:
    d = _obj(_obj(v, p, ("source",), ())["source"], _at(p, "source"), (), _SOURCE_KEYS)
    q = _at(p, "source")
    return Source(**{_snake(k): _opt(d, k, q, _strs, _NONE) for k in _SOURCE_KEYS})


def _operation(v: Any, p: str) -> Operation:
    q = _at(p, "operation")
    d = _obj(_obj(v, p, ("operation",), ())["operation"], q, (), _OPERATION_KEYS)
    ports = lambda x, r: _list(x, r, lambda y, s: _str(y, s, _PORT_STRING, "a port number"))  # noqa: E731
    values = {
        _snake(k): _opt(d, k, q, ports if k in ("ports", "notPorts") else _strs, _NONE)
        for k in _OPERATION_KEYS
    }
    return Operation(**values)


def _condition(v: Any, p: str) -> Condition:
    d = _obj(v, p, ("key",), ("values", "notValues"))
    key = _str(d["key"], _at(p, "key"), _WHEN_KEY, "a supported condition key")
    cond = Condition(
        key=key,
        values=_opt(d, "values", p, _strs, ()),
        not_values=_opt(d, "notValues", p, _strs, ()),
    )
    if not cond.values and not cond.not_values:
        raise SnapshotError(p, "needs values or notValues")
    return cond


def _rule(v: Any, p: str) -> Rule:
    d = _obj(v, p, (), ("from", "to", "when"))
    return Rule(
        sources=_opt(d, "from", p, lambda x, q: _list(x, q, _source), ()),
        operations=_opt(d, "to", p, lambda x, q: _list(x, q, _operation), ()),
        when=_opt(d, "when", p, lambda x, q: _list(x, q, _condition), ()),
    )


def _policy(v: Any, p: str) -> AuthorizationPolicy:
    d = _obj(v, p, ("name",), ("action", "rules"))
    return AuthorizationPolicy(
        name=_str(d["name"], _at(p, "name")),
        action=_opt(d, "action", p, lambda x, q: _enum(x, q, ACTIONS), "ALLOW"),
        rules=_opt(d, "rules", p, lambda x, q: _list(x, q, _rule), ()),
    )


def parse_policy(obj: Any, path: str = "") -> AuthorizationPolicy:
    """One authorization policy in the snapshot's JSON form (for the plan and tests)."""
    return _policy(obj, path)


def _inbound_listener(v: Any, p: str) -> InboundListener:
    d = _obj(v, p, ("port", "localAddress"), ("protocol", "mtlsMode", "bindAddress", "servicePort"))
    return InboundListener(
        port=_port(d["port"], _at(p, "port")),
        local_address=_address(d["localAddress"], _at(p, "localAddress")),
        protocol=_opt(d, "protocol", p, lambda x, q: _enum(x, q, PROTOCOLS), "http"),
        mtls_mode=_opt(d, "mtlsMode", p, lambda x, q: _enum(x, q, MTLS_MODES), "STRICT"),
        bind_address=_opt(d, "bindAddress", p, _bind, "0.0.0.0"),
        service_port=_opt(d, "servicePort", p, lambda x, q: _int(x, q, 1, 65535), None),
    )


def _inbound(v: Any, p: str) -> Inbound:
    d = _obj(v, p, ("service", "namespace"), ("listeners", "policies", "defaultDeny"))
    return Inbound(
        service=_str(d["service"], _at(p, "service")),
        namespace=_str(d["namespace"], _at(p, "namespace")),
        listeners=_opt(d, "listeners", p, lambda x, q: _list(x, q, _inbound_listener), ()),
        policies=_opt(d, "policies", p, lambda x, q: _list(x, q, _policy), ()),
        default_deny=_opt(d, "defaultDeny", p, _bool, False),
    )


def _path_match(v: Any, p: str) -> PathMatch:
    d = _obj(v, p, (), ("exact", "prefix", "regex"))
    _exactly_one(d, p, ("exact", "prefix", "regex"))
    return PathMatch(
        exact=_opt(d, "exact", p, _path_string, None),
        prefix=_opt(d, "prefix", p, _path_string, None),
        regex=_opt(d, "regex", p, _str, None),
    )


def _path_string(v: Any, p: str) -> str:
    s = _str(v, p)
    if not s.startswith("/"):
        raise SnapshotError(p, f"{s!r} must start with /")
    return s


def _any_str(v: Any, p: str) -> str:
    """A string that may be empty (a header or query value)."""
    if not isinstance(v, str):
        raise SnapshotError(p, f"expected a string, got {_kind(v)}")
    return v


def _header_match(v: Any, p: str) -> HeaderMatch:
    d = _obj(v, p, ("name",), ("exact", "prefix", "regex", "present"))
    _exactly_one(d, p, ("exact", "prefix", "regex", "present"))
    return HeaderMatch(
        name=_str(d["name"], _at(p, "name"), _HEADER_NAME, "a valid header name"),
        exact=_opt(d, "exact", p, _any_str, None),
        prefix=_opt(d, "prefix", p, _str, None),
        regex=_opt(d, "regex", p, _str, None),
        present=_opt(d, "present", p, _bool, None),
    )


def _query_match(v: Any, p: str) -> QueryParamMatch:
    d = _obj(v, p, ("name",), ("exact", "regex", "present"))
    _exactly_one(d, p, ("exact", "regex", "present"))
    return QueryParamMatch(
        name=_str(d["name"], _at(p, "name")),
        exact=_opt(d, "exact", p, _any_str, None),
        regex=_opt(d, "regex", p, _str, None),
        present=_opt(d, "present", p, _bool, None),
    )


def _route_match(v: Any, p: str) -> RouteMatch:
    d = _obj(v, p, (), ("path", "methods", "headers", "queryParams"))
    method = lambda x, q: _str(x, q, _METHOD, "an HTTP method")  # noqa: E731
    return RouteMatch(
        path=_opt(d, "path", p, _path_match, None),
        methods=_opt(d, "methods", p, lambda x, q: _list(x, q, method), ()),
        headers=_opt(d, "headers", p, lambda x, q: _list(x, q, _header_match), ()),
        query_params=_opt(d, "queryParams", p, lambda x, q: _list(x, q, _query_match), ()),
    )


def _weighted(v: Any, p: str) -> WeightedCluster:
    d = _obj(v, p, ("cluster",), ("weight",))
    return WeightedCluster(
        cluster=_str(d["cluster"], _at(p, "cluster")),
        weight=_opt(d, "weight", p, lambda x, q: _int(x, q, 0), 1),
    )


def _retries(v: Any, p: str) -> RetryPolicy:
    d = _obj(v, p, ("attempts",), ("perTryTimeoutMs", "retryOn"))
    return RetryPolicy(
        attempts=_int(d["attempts"], _at(p, "attempts"), 0, 10),
        per_try_timeout_ms=_opt(d, "perTryTimeoutMs", p, lambda x, q: _int(x, q, 1), None),
        retry_on=_opt(
            d,
            "retryOn",
            p,
            lambda x, q: _list(x, q, lambda y, s: _enum(y, s, RETRY_ON), min_items=1),
            ("5xx", "connect-failure", "reset"),
        ),
    )


def _fault(v: Any, p: str) -> Fault:
    d = _obj(v, p, (), ("delay", "abort"))

    def delay(x: Any, q: str) -> FaultDelay:
        e = _obj(x, q, ("fixedMs",), ("percent",))
        return FaultDelay(
            _ms(e["fixedMs"], _at(q, "fixedMs")), _opt(e, "percent", q, _percent, 100.0)
        )

    def abort(x: Any, q: str) -> FaultAbort:
        e = _obj(x, q, ("httpStatus",), ("percent",))
        status = _int(e["httpStatus"], _at(q, "httpStatus"), 200, 599)
        return FaultAbort(status, _opt(e, "percent", q, _percent, 100.0))

    fault = Fault(delay=_opt(d, "delay", p, delay, None), abort=_opt(d, "abort", p, abort, None))
    if fault.delay is None and fault.abort is None:
        raise SnapshotError(p, "needs delay or abort")
    return fault


def _mirror(v: Any, p: str) -> Mirror:
    d = _obj(v, p, ("cluster",), ("percent",))
    return Mirror(
        cluster=_str(d["cluster"], _at(p, "cluster")),
        percent=_opt(d, "percent", p, _percent, 100.0),
    )


def _header_edits(v: Any, p: str) -> HeaderEdits:
    d = _obj(v, p, (), ("add", "set", "remove"))
    name = lambda x, q: _str(x, q, _HEADER_NAME, "a valid header name")  # noqa: E731
    return HeaderEdits(
        add=_opt(d, "add", p, lambda x, q: _str_map(x, q, _HEADER_NAME, headers=True), {}),
        set=_opt(d, "set", p, lambda x, q: _str_map(x, q, _HEADER_NAME, headers=True), {}),
        remove=_opt(d, "remove", p, lambda x, q: _list(x, q, name), ()),
    )


def _route(v: Any, p: str) -> Route:
    d = _obj(
        v,
        p,
        ("clusters",),
        (
            "name",
            "match",
            "timeoutMs",
            "retries",
            "fault",
            "mirror",
            "requestHeaders",
            "responseHeaders",
        ),
    )
    return Route(
        name=_opt(d, "name", p, _str, None),
        match=_opt(d, "match", p, _route_match, RouteMatch()),
        clusters=_list(d["clusters"], _at(p, "clusters"), _weighted, min_items=1),
        timeout_ms=_opt(d, "timeoutMs", p, lambda x, q: _int(x, q, 1), None),
        retries=_opt(d, "retries", p, _retries, None),
        fault=_opt(d, "fault", p, _fault, None),
        mirror=_opt(d, "mirror", p, _mirror, None),
        request_headers=_opt(d, "requestHeaders", p, _header_edits, None),
        response_headers=_opt(d, "responseHeaders", p, _header_edits, None),
    )


def _virtual_host(v: Any, p: str) -> VirtualHost:
    d = _obj(v, p, ("name", "domains"), ("routes",))
    return VirtualHost(
        name=_str(d["name"], _at(p, "name")),
        domains=_list(d["domains"], _at(p, "domains"), _str, min_items=1),
        routes=_opt(d, "routes", p, lambda x, q: _list(x, q, _route), ()),
    )


def _outbound(v: Any, p: str) -> Outbound:
    d = _obj(v, p, ("port",), ("bindAddress", "virtualHosts"))
    return Outbound(
        port=_port(d["port"], _at(p, "port")),
        bind_address=_opt(d, "bindAddress", p, _bind, "127.0.0.1"),
        virtual_hosts=_opt(d, "virtualHosts", p, lambda x, q: _list(x, q, _virtual_host), ()),
    )


def _tcp_listener(v: Any, p: str) -> TcpListener:
    d = _obj(v, p, ("port", "cluster"), ("bindAddress",))
    return TcpListener(
        port=_port(d["port"], _at(p, "port")),
        cluster=_str(d["cluster"], _at(p, "cluster")),
        bind_address=_opt(d, "bindAddress", p, _bind, "127.0.0.1"),
    )


def _endpoint(v: Any, p: str) -> Endpoint:
    d = _obj(v, p, ("address",), ("weight", "labels"))
    return Endpoint(
        address=_address(d["address"], _at(p, "address")),
        weight=_opt(d, "weight", p, lambda x, q: _int(x, q, 1, 1_000_000), 1),
        labels=_opt(d, "labels", p, _str_map, {}),
    )


def _hash_key(v: Any, p: str) -> HashKey:
    d = _obj(v, p, (), ("header", "cookie", "sourceIp"))
    _exactly_one(d, p, ("header", "cookie", "sourceIp"))
    key = HashKey(
        header=_opt(d, "header", p, lambda x, q: _str(x, q, _HEADER_NAME, "a header name"), None),
        cookie=_opt(d, "cookie", p, _str, None),
        source_ip=_opt(d, "sourceIp", p, _bool, None),
    )
    if key.source_ip is False:
        raise SnapshotError(_at(p, "sourceIp"), "must be true when given")
    return key


def _pool(v: Any, p: str) -> ConnectionPool:
    keys = ("maxConnections", "maxPendingRequests", "maxRequestsPerConnection", "connectTimeoutMs")
    d = _obj(v, p, (), keys)
    dflt = ConnectionPool()
    return ConnectionPool(
        max_connections=_opt(
            d, "maxConnections", p, lambda x, q: _int(x, q, 1), dflt.max_connections
        ),
        max_pending_requests=_opt(
            d, "maxPendingRequests", p, lambda x, q: _int(x, q, 0), dflt.max_pending_requests
        ),
        max_requests_per_connection=_opt(
            d, "maxRequestsPerConnection", p, lambda x, q: _int(x, q, 0), 0
        ),
        connect_timeout_ms=_opt(
            d, "connectTimeoutMs", p, lambda x, q: _int(x, q, 1), dflt.connect_timeout_ms
        ),
    )


def _outlier(v: Any, p: str) -> OutlierDetection:
    keys = ("consecutive5xx", "intervalMs", "baseEjectionTimeMs", "maxEjectionPercent")
    d = _obj(v, p, (), keys)
    dflt = OutlierDetection()
    return OutlierDetection(
        consecutive_5xx=_opt(
            d, "consecutive5xx", p, lambda x, q: _int(x, q, 1), dflt.consecutive_5xx
        ),
        interval_ms=_opt(d, "intervalMs", p, lambda x, q: _int(x, q, 1), dflt.interval_ms),
        base_ejection_time_ms=_opt(
            d, "baseEjectionTimeMs", p, lambda x, q: _int(x, q, 1), dflt.base_ejection_time_ms
        ),
        max_ejection_percent=_opt(d, "maxEjectionPercent", p, _percent, dflt.max_ejection_percent),
    )


def _tls(v: Any, p: str) -> UpstreamTls:
    d = _obj(v, p, (), ("mode", "sni", "peerSpiffeIds"))
    spiffe = lambda x, q: _str(x, q, _SPIFFE, "a spiffe:// URI")  # noqa: E731
    return UpstreamTls(
        mode=_opt(d, "mode", p, lambda x, q: _enum(x, q, TLS_MODES), "MUTUAL"),
        sni=_opt(d, "sni", p, _str, None),
        peer_spiffe_ids=_opt(d, "peerSpiffeIds", p, lambda x, q: _list(x, q, spiffe), ()),
    )


def _cluster(v: Any, p: str) -> Cluster:
    d = _obj(
        v,
        p,
        ("name",),
        (
            "endpoints",
            "protocol",
            "lbPolicy",
            "hashKey",
            "connectionPool",
            "outlierDetection",
            "tls",
        ),
    )
    cluster = Cluster(
        name=_str(d["name"], _at(p, "name")),
        endpoints=_opt(d, "endpoints", p, lambda x, q: _list(x, q, _endpoint), ()),
        protocol=_opt(d, "protocol", p, lambda x, q: _enum(x, q, PROTOCOLS), "http"),
        lb_policy=_opt(d, "lbPolicy", p, lambda x, q: _enum(x, q, LB_POLICIES), "round_robin"),
        hash_key=_opt(d, "hashKey", p, _hash_key, None),
        connection_pool=_opt(d, "connectionPool", p, _pool, ConnectionPool()),
        outlier_detection=_opt(d, "outlierDetection", p, _outlier, None),
        tls=_opt(d, "tls", p, _tls, None),
    )
    if (cluster.lb_policy == "consistent_hash") != (cluster.hash_key is not None):
        raise SnapshotError(_at(p, "hashKey"), "is required with, and only with, consistent_hash")
    return cluster


def _telemetry(v: Any, p: str) -> Telemetry:
    keys = ("tracingSamplingPercent", "accessLogSamplingPercent", "statsIntervalSeconds")
    d = _obj(v, p, (), keys)
    return Telemetry(
        tracing_sampling_percent=_opt(d, "tracingSamplingPercent", p, _percent, 1.0),
        access_log_sampling_percent=_opt(d, "accessLogSamplingPercent", p, _percent, 100.0),
        stats_interval_seconds=_opt(
            d, "statsIntervalSeconds", p, lambda x, q: _num(x, q, 0.1, 3600.0), 1.0
        ),
    )


_TOP_KEYS = (
    "version",
    "revision",
    "identity",
    "inbound",
    "outbound",
    "tcp",
    "clusters",
    "telemetry",
)


def parse_snapshot(obj: Any) -> Snapshot:
    """Check a snapshot JSON object and build the model. Raises SnapshotError.

    If `version` is present it must equal `compute_version(obj)`: a snapshot that was altered
    after it was hashed is refused.
    """
    d = _obj(obj, "", (), _TOP_KEYS)
    snap = Snapshot(
        revision=_opt(d, "revision", "", _str, None),
        identity=_opt(d, "identity", "", _identity, None),
        inbound=_opt(d, "inbound", "", _inbound, None),
        outbound=_opt(d, "outbound", "", _outbound, None),
        tcp=_opt(d, "tcp", "", lambda x, q: _list(x, q, _tcp_listener), ()),
        clusters=_opt(d, "clusters", "", lambda x, q: _list(x, q, _cluster), ()),
        telemetry=_opt(d, "telemetry", "", _telemetry, Telemetry()),
    )
    if "version" in d:
        given = _str(d["version"], "version", _VERSION, "a SHA-256 hex digest")
        try:
            actual = compute_version(d)
        except ValueError as e:  # NaN/Infinity cannot be hashed canonically
            raise SnapshotError("", f"not canonical JSON: {e}") from None
        if given != actual:
            raise SnapshotError(
                "version", f"does not match the content (content hashes to {actual})"
            )
    return snap


# --- model -> JSON ----------------------------------------------------------------------------

_CAMEL_EXCEPTIONS = {"sources": "from", "operations": "to"}


def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)


def _camel(snake: str) -> str:
    if snake in _CAMEL_EXCEPTIONS:
        return _CAMEL_EXCEPTIONS[snake]
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# Per dataclass: (attribute, JSON name, how to write it); worked out once per class because a
# large snapshot has tens of thousands of objects.
_PLAIN, _AS_FLOAT, _WRAP_SOURCE, _WRAP_OPERATION = range(4)
_PLANS: dict[type, tuple[tuple[str, str, int], ...]] = {}
_SCALARS = (str, int, float, bool)


def _plan(cls: type) -> tuple[tuple[str, str, int], ...]:
    plan = []
    for f in fields(cls):
        how = _PLAIN
        if cls is Rule and f.name == "sources":
            how = _WRAP_SOURCE
        elif cls is Rule and f.name == "operations":
            how = _WRAP_OPERATION
        elif f.type == "float":
            how = _AS_FLOAT  # Telemetry(stats_interval_seconds=1) is written 1.0
        plan.append((f.name, _camel(f.name), how))
    _PLANS[cls] = tuple(plan)
    return _PLANS[cls]


def _to_json(value: Any) -> Any:
    cls = type(value)
    if cls is tuple:
        return [_to_json(v) for v in value]
    if cls in _SCALARS:
        return value
    plan = _PLANS.get(cls)
    if plan is None and is_dataclass(value) and not isinstance(value, type):
        plan = _plan(cls)
    if plan is not None:
        out: dict[str, Any] = {}
        for attr, name, how in plan:
            v = getattr(value, attr)
            if v is None or (not v and type(v) not in _SCALARS):
                continue  # absent = default; keeps snapshots small and diffs quiet
            if how == _PLAIN:
                out[name] = _to_json(v)
            elif how == _AS_FLOAT:
                out[name] = float(v)
            elif how == _WRAP_SOURCE:
                out[name] = [{"source": _to_json(x)} for x in v]
            else:
                out[name] = [{"operation": _to_json(x)} for x in v]
        return out
    if isinstance(value, Mapping):
        if not value:
            return {}
        return {k: value[k] for k in sorted(value)}
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def snapshot_to_json(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot's normal JSON form, with `version` set (and `revision` when known).

    Fields equal to None or empty lists/maps are left out; everything else is written, defaults
    included. parse_snapshot(snapshot_to_json(s)) == s, and for a document in this normal form
    snapshot_to_json(parse_snapshot(doc)) == doc.
    """
    body = cast(dict[str, Any], _to_json(snapshot))
    body.pop("revision", None)
    out: dict[str, Any] = {"version": compute_version(body)}
    if snapshot.revision is not None:
        out["revision"] = snapshot.revision
    out.update(body)
    return out


def policy_to_json(policy: AuthorizationPolicy) -> dict[str, Any]:
    return cast(dict[str, Any], _to_json(policy))


def snapshot_version(snapshot: Snapshot) -> str:
    """The version a snapshot has in its normal JSON form."""
    return cast(str, snapshot_to_json(snapshot)["version"])
