"""Plain data that passed the schema -> typed model resources, with the doc's defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.language.model import (
    DEFAULT_NAMESPACE,
    DEFAULT_OUTBOUND_PORT_BASE,
    Analysis,
    AuthorizationPolicy,
    AuthorizationRule,
    AuthorizationSettings,
    Condition,
    ConnectionPool,
    Destination,
    Endpoint,
    Fault,
    FaultAbort,
    FaultDelay,
    FrozenDict,
    HashOn,
    HeaderMatch,
    HeaderOps,
    HeaderPolicy,
    Identity,
    LoadBalancer,
    Match,
    Mesh,
    Mirror,
    MtlsSettings,
    OutlierDetection,
    PathMatch,
    Port,
    Positions,
    QueryParamMatch,
    Resource,
    Retries,
    RolloutPolicy,
    Route,
    RouteRule,
    RuleFrom,
    RuleOperation,
    RuleSource,
    RuleTo,
    Selector,
    Service,
    ServiceRef,
    Stage,
    Subset,
    SubsetPolicy,
    Telemetry,
    TrafficPolicy,
    parse_duration,
    resolve_service_ref,
)

D = dict[str, Any]


def _dur(v: Any) -> float | None:
    return parse_duration(v) if v is not None else None


def _fd(v: Any) -> FrozenDict[str, str]:
    return FrozenDict(v) if v else FrozenDict()


def _t(v: Any) -> tuple[str, ...]:
    return tuple(v) if v else ()


def _num(v: Any, default: float | None) -> float | None:
    return float(v) if v is not None else default


def build_resource(data: D, positions: Positions, doc_index: int = 0) -> Resource:
    """Build the resource of one schema-valid document."""
    meta = data["metadata"]
    ns: str = meta.get("namespace") or DEFAULT_NAMESPACE
    common: D = {
        "name": meta["name"],
        "namespace": ns,
        "labels": _fd(meta.get("labels")),
        "positions": positions,
        "doc_index": doc_index,
    }
    builder = _BUILDERS[data["kind"]]
    return builder(data.get("spec") or {}, ns, common)


def _mesh(s: D, ns: str, common: D) -> Mesh:
    tel = s.get("telemetry") or {}
    return Mesh(
        **common,
        trust_domain=s["trustDomain"],
        root_namespace=s.get("rootNamespace", "meshcd-system"),
        mtls=_mtls(s.get("mtls")) or MtlsSettings(),
        authorization=AuthorizationSettings((s.get("authorization") or {}).get("default", "allow")),
        telemetry=Telemetry(
            float(tel.get("tracingSamplingPercent", 1)),
            float(tel.get("accessLogSamplingPercent", 100)),
        ),
        default_rollout_policy=s.get("defaultRolloutPolicy"),
        outbound_port_base=int(s.get("outboundPortBase", DEFAULT_OUTBOUND_PORT_BASE)),
    )


def _mtls(v: D | None) -> MtlsSettings | None:
    return MtlsSettings(v["mode"]) if v else None


def _refs(v: Any, ns: str) -> tuple[ServiceRef, ...]:
    return tuple(resolve_service_ref(x, ns) for x in v) if v else ()


def _service(s: D, ns: str, common: D) -> Service:
    egress = s.get("egress")
    return Service(
        **common,
        ports=tuple(Port(p["name"], p["number"], p.get("protocol", "http")) for p in s["ports"]),
        subsets=tuple(Subset(x["name"], _fd(x.get("labels"))) for x in s.get("subsets") or ()),
        endpoints=tuple(Endpoint(e["address"], _fd(e.get("labels"))) for e in s.get("endpoints") or ()),
        identity=Identity(str((s.get("identity") or {}).get("serviceAccount", common["name"]))),
        egress=_refs(egress, ns) if egress is not None else None,
    )


def _match(m: D) -> Match:
    p = m.get("path")
    return Match(
        path=PathMatch(p.get("exact"), p.get("prefix"), p.get("regex")) if p else None,
        methods=_t(m.get("methods")),
        headers=tuple(
            HeaderMatch(h["name"], h.get("exact"), h.get("prefix"), h.get("regex"), h.get("present"))
            for h in m.get("headers") or ()
        ),
        query_params=tuple(
            QueryParamMatch(q["name"], q.get("exact"), q.get("regex"), q.get("present"))
            for q in m.get("queryParams") or ()
        ),
    )


def _header_ops(h: D | None) -> HeaderOps:
    h = h or {}
    return HeaderOps(_fd(h.get("add")), _fd(h.get("set")), _t(h.get("remove")))


def _rule(r: D, ns: str) -> RouteRule:
    retries = r.get("retries")
    fault = r.get("fault")
    mirror = r.get("mirror")
    headers = r.get("headers")
    delay = (fault or {}).get("delay")
    abort = (fault or {}).get("abort")
    return RouteRule(
        destinations=tuple(
            Destination(resolve_service_ref(d["service"], ns), d.get("subset"), d.get("port"),
                        d.get("weight", 100))
            for d in r["destinations"]
        ),
        name=r.get("name"),
        matches=tuple(_match(m) for m in r.get("matches") or ()),
        timeout=_dur(r.get("timeout")),
        retries=Retries(retries["attempts"], _dur(retries.get("perTryTimeout")),
                        _t(retries.get("retryOn"))) if retries else None,
        fault=Fault(
            FaultDelay(parse_duration(delay["fixed"]), float(delay.get("percent", 100)))
            if delay else None,
            FaultAbort(abort["httpStatus"], float(abort.get("percent", 100))) if abort else None,
        ) if fault is not None else None,
        mirror=Mirror(resolve_service_ref(mirror["service"], ns), mirror.get("subset"),
                      mirror.get("port"), float(mirror.get("percent", 100))) if mirror else None,
        headers=HeaderPolicy(_header_ops(headers.get("request")), _header_ops(headers.get("response")))
        if headers is not None else None,
    )


def _route(s: D, ns: str, common: D) -> Route:
    return Route(
        **common,
        host=resolve_service_ref(s["host"], ns),
        rules=tuple(_rule(r, ns) for r in s["rules"]),
    )


def _blocks(s: D) -> D:
    lb = s.get("loadBalancer")
    cp = s.get("connectionPool")
    od = s.get("outlierDetection")
    hash_on = (lb or {}).get("hashOn")
    return {
        "load_balancer": LoadBalancer(
            lb.get("type", "round_robin"),
            HashOn(hash_on.get("header"), hash_on.get("cookie"), hash_on.get("sourceIP"))
            if hash_on else None,
        ) if lb is not None else None,
        "connection_pool": ConnectionPool(
            cp.get("maxConnections"), cp.get("maxPendingRequests"),
            cp.get("maxRequestsPerConnection"), _dur(cp.get("connectTimeout")),
        ) if cp is not None else None,
        "outlier_detection": OutlierDetection(
            od.get("consecutive5xx"), _dur(od.get("interval")), _dur(od.get("baseEjectionTime")),
            _num(od.get("maxEjectionPercent"), None),
        ) if od is not None else None,
        "mtls": _mtls(s.get("mtls")),
    }


def _traffic_policy(s: D, ns: str, common: D) -> TrafficPolicy:
    return TrafficPolicy(
        **common,
        service=resolve_service_ref(s["service"], ns),
        subsets=tuple(SubsetPolicy(x["name"], **_blocks(x)) for x in s.get("subsets") or ()),
        **_blocks(s),
    )


def _authz_rule(r: D) -> AuthorizationRule:
    def src(x: D) -> RuleSource:
        return RuleSource(
            _t(x.get("principals")), _t(x.get("notPrincipals")),
            _t(x.get("namespaces")), _t(x.get("notNamespaces")),
            _t(x.get("ipBlocks")), _t(x.get("notIpBlocks")),
        )

    def op(x: D) -> RuleOperation:
        return RuleOperation(
            _t(x.get("hosts")), _t(x.get("notHosts")), _t(x.get("ports")), _t(x.get("notPorts")),
            _t(x.get("methods")), _t(x.get("notMethods")), _t(x.get("paths")), _t(x.get("notPaths")),
        )

    return AuthorizationRule(
        from_=tuple(RuleFrom(src(f["source"])) for f in r.get("from") or ()),
        to=tuple(RuleTo(op(t["operation"])) for t in r.get("to") or ()),
        when=tuple(Condition(c["key"], _t(c.get("values")), _t(c.get("notValues")))
                   for c in r.get("when") or ()),
    )


def _authorization_policy(s: D, ns: str, common: D) -> AuthorizationPolicy:
    sel = s.get("selector")
    return AuthorizationPolicy(
        **common,
        selector=Selector(_refs(sel.get("services"), ns)) if sel is not None else None,
        action=s.get("action", "ALLOW"),
        rules=tuple(_authz_rule(r) for r in s.get("rules") or ()),
    )


def _rollout_policy(s: D, ns: str, common: D) -> RolloutPolicy:
    a = s.get("analysis") or {}
    d = Analysis()
    return RolloutPolicy(
        **common,
        services=_refs(s.get("services"), ns),
        stages=tuple(
            Stage(parse_duration(x["bake"]), x.get("count"), _num(x.get("percent"), None))
            for x in s["stages"]
        ),
        analysis=Analysis(
            float(a.get("maxErrorRatePercent", d.max_error_rate_percent)),
            float(a.get("maxP99LatencyMs", d.max_p99_latency_ms)),
            float(a.get("maxIncreaseOverBaselinePercent", d.max_increase_over_baseline_percent)),
            int(a.get("minRequests", d.min_requests)),
            float(a.get("confidence", d.confidence)),
            a.get("onInconclusive", d.on_inconclusive),
        ),
        on_failure=s.get("onFailure", "rollback"),
        on_new_commit=s.get("onNewCommit", "restart"),
    )


_BUILDERS: dict[str, Callable[[D, str, D], Resource]] = {
    "Mesh": _mesh,
    "Service": _service,
    "Route": _route,
    "TrafficPolicy": _traffic_policy,
    "AuthorizationPolicy": _authorization_policy,
    "RolloutPolicy": _rollout_policy,
}
