"""Istio: VirtualService, DestinationRule, AuthorizationPolicy, PeerAuthentication (plus
Sidecar for `egress` and Telemetry for the Mesh's sampling), from the spec model.

meshcd's policies already have Istio's semantics, so most of this is renaming. Conventions
(docs/exporters.md): pods carry `app: <service>`; the Mesh's rootNamespace is Istio's root
namespace; a workload's container port equals its Service port.
"""

from __future__ import annotations

from typing import Any

from reconciler.language import model as sm

from .common import (
    APP_LABEL,
    Export,
    dump_yaml,
    duration,
    file_name,
    fqdn,
    k8s,
    k8s_name,
    res_name,
)

NETWORKING = "networking.istio.io/v1"
SECURITY = "security.istio.io/v1"
TELEMETRY = "telemetry.istio.io/v1"
DEFAULT_RETRY_ON = "5xx,connect-failure,reset"  # the proxy's default when retryOn is not given


def _emit(export: Export, doc: dict[str, Any]) -> None:
    meta = doc["metadata"]
    export.add(file_name(meta.get("namespace"), doc["kind"], meta["name"]), dump_yaml(doc))


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _fields(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The non-empty tuple fields of a dataclass, camelCased (Istio's names)."""
    return {_camel(n): list(getattr(obj, n)) for n in names if getattr(obj, n)}


_SOURCE = ("principals", "not_principals", "namespaces", "not_namespaces", "ip_blocks",
           "not_ip_blocks")
_OPERATION = ("hosts", "not_hosts", "ports", "not_ports", "methods", "not_methods", "paths",
              "not_paths")


def authz_rule(rule: sm.AuthorizationRule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.from_:
        out["from"] = [{"source": _fields(f.source, _SOURCE)} for f in rule.from_]
    if rule.to:
        out["to"] = [{"operation": _fields(t.operation, _OPERATION)} for t in rule.to]
    if rule.when:
        out["when"] = [{"key": c.key, **_fields(c, ("values", "not_values"))} for c in rule.when]
    return out


# --- security ------------------------------------------------------------------------------


def _authorization_policies(model: sm.ConfigModel, export: Export) -> None:
    mesh = model.mesh
    if mesh is not None and mesh.default_deny:
        # An ALLOW policy without rules in the root namespace: every workload has an ALLOW
        # policy, so nothing is allowed unless some policy allows it (meshcd's default deny).
        _emit(export, k8s(SECURITY, "AuthorizationPolicy", "meshcd-default-deny",
                          mesh.root_namespace, {}))
    seen: set[tuple[str, str]] = set()
    for p in model.authorization_policies:
        if (p.namespace, p.name) in seen:
            continue
        seen.add((p.namespace, p.name))
        spec: dict[str, Any] = {"action": p.action}
        if p.rules:
            spec["rules"] = [authz_rule(r) for r in p.rules]
        services = p.selector.services if p.selector is not None else ()
        if not services:
            _emit(export, k8s(SECURITY, "AuthorizationPolicy", p.name, p.namespace, spec))
            continue
        # Istio selects by labels within the policy's namespace: one policy per selected
        # service, in that service's namespace.
        for ref in services:
            # `.` cannot occur in meshcd names, so `<policy>.<service>` names no other policy
            name = p.name if len(services) == 1 and ref.namespace == p.namespace else (
                k8s_name(p.name, ref.name))
            _emit(export, k8s(SECURITY, "AuthorizationPolicy", name, ref.namespace, {
                "selector": {"matchLabels": {APP_LABEL: ref.name}}, **spec}))


def _peer_authentications(model: sm.ConfigModel, export: Export) -> None:
    mesh = model.mesh
    if mesh is not None:
        _emit(export, k8s(SECURITY, "PeerAuthentication", "default", mesh.root_namespace,
                          {"mtls": {"mode": mesh.mtls.mode}}))
    for tp in model.traffic_policies:
        svc = model.service(tp.service)
        if svc is None:
            continue
        if tp.mtls is not None:
            _emit(export, k8s(SECURITY, "PeerAuthentication", svc.name, svc.namespace, {
                "selector": {"matchLabels": {APP_LABEL: svc.name}},
                "mtls": {"mode": tp.mtls.mode}}))
        for sp in tp.subsets:
            subset = svc.subset(sp.name)
            if sp.mtls is None or subset is None:
                continue
            _emit(export, k8s(SECURITY, "PeerAuthentication", k8s_name(svc.name, sp.name),
                              svc.namespace, {
                "selector": {"matchLabels": {APP_LABEL: svc.name, **dict(sorted(subset.labels.items()))}},
                "mtls": {"mode": sp.mtls.mode}}))


# --- traffic -------------------------------------------------------------------------------


def _lb(lb: sm.LoadBalancer) -> dict[str, Any]:
    if lb.type != "consistent_hash":
        return {"simple": lb.type.upper()}
    h = lb.hash_on or sm.HashOn(source_ip=True)
    if h.header is not None:
        return {"consistentHash": {"httpHeaderName": h.header}}
    if h.cookie is not None:
        return {"consistentHash": {"httpCookie": {"name": h.cookie}}}
    return {"consistentHash": {"useSourceIp": True}}


def _traffic(export: Export, where: str, at: str, lb: sm.LoadBalancer | None,
             pool: sm.ConnectionPool | None, outlier: sm.OutlierDetection | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if lb is not None:
        out["loadBalancer"] = _lb(lb)
    if pool is not None:
        tcp: dict[str, Any] = {}
        http: dict[str, Any] = {}
        if pool.max_connections is not None:
            tcp["maxConnections"] = pool.max_connections
        if pool.connect_timeout is not None:
            tcp["connectTimeout"] = duration(pool.connect_timeout)
        if pool.max_pending_requests is not None:
            http["http1MaxPendingRequests"] = pool.max_pending_requests
        if pool.max_requests_per_connection is not None:
            http["maxRequestsPerConnection"] = pool.max_requests_per_connection
        out["connectionPool"] = {k: v for k, v in (("tcp", tcp), ("http", http)) if v}
    if outlier is not None:
        od: dict[str, Any] = {}
        if outlier.consecutive_5xx is not None:
            od["consecutive5xxErrors"] = outlier.consecutive_5xx
        if outlier.interval is not None:
            od["interval"] = duration(outlier.interval)
        if outlier.base_ejection_time is not None:
            od["baseEjectionTime"] = duration(outlier.base_ejection_time)
        if outlier.max_ejection_percent is not None:
            pct = round(outlier.max_ejection_percent)
            if pct != outlier.max_ejection_percent:
                export.warn(where, f"{at}outlierDetection.maxEjectionPercent: Istio takes a whole "
                                   f"percentage; {outlier.max_ejection_percent} rounded to {pct}")
            od["maxEjectionPercent"] = pct
        out["outlierDetection"] = od
    return out


def _destination_rules(model: sm.ConfigModel, export: Export) -> None:
    for svc in model.services:
        if model.service(svc.ref) is not svc:
            continue  # a duplicate (finding MCD105)
        tps = model.traffic_policies_by_service.get(svc.ref.key)
        tp = tps[0] if tps else None
        if not svc.subsets and (tp is None or not (
                tp.load_balancer or tp.connection_pool or tp.outlier_detection)):
            continue  # nothing a DestinationRule would say
        where = res_name(tp) if tp is not None else res_name(svc)
        spec: dict[str, Any] = {"host": fqdn(svc.ref)}
        if tp is not None:
            traffic = _traffic(export, where, "spec.", tp.load_balancer, tp.connection_pool,
                               tp.outlier_detection)
            if traffic:
                spec["trafficPolicy"] = traffic
        subsets = []
        for s in svc.subsets:
            entry: dict[str, Any] = {"name": s.name, "labels": dict(sorted(s.labels.items()))}
            sp = next((x for x in tp.subsets if x.name == s.name), None) if tp else None
            if sp is not None:
                traffic = _traffic(export, where, f"spec.subsets[{s.name}].", sp.load_balancer,
                                   sp.connection_pool, sp.outlier_detection)
                if traffic:
                    entry["trafficPolicy"] = traffic
            subsets.append(entry)
        if subsets:
            spec["subsets"] = subsets
        _emit(export, k8s(NETWORKING, "DestinationRule", svc.name, svc.namespace, spec))


def _string(exact: str | None, prefix: str | None, regex: str | None) -> dict[str, str]:
    if exact is not None:
        return {"exact": exact}
    if prefix is not None:
        return {"prefix": prefix}
    return {"regex": regex or ""}


def _match(export: Export, where: str, path: str, m: sm.Match) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if m.path is not None:
        out["uri"] = _string(m.path.exact, m.path.prefix, m.path.regex)
    if m.methods:
        out["method"] = ({"exact": m.methods[0]} if len(m.methods) == 1
                         else {"regex": "|".join(m.methods)})
    headers: dict[str, Any] = {}
    without: dict[str, Any] = {}
    for h in m.headers:
        if h.present is None:
            headers[h.name] = _string(h.exact, h.prefix, h.regex)
        elif h.present:
            headers[h.name] = {"regex": ".*"}
        else:
            without[h.name] = {"regex": ".*"}
    if headers:
        out["headers"] = headers
    if without:
        out["withoutHeaders"] = without
    params: dict[str, Any] = {}
    for i, q in enumerate(m.query_params):
        if q.present is None:
            params[q.name] = _string(q.exact, None, q.regex)
        elif q.present:
            params[q.name] = {"regex": ".*"}
        else:
            export.warn(where, f"{path}.queryParams[{i}]: Istio cannot match an absent query "
                               f"parameter ({q.name}); left out (the rule matches more)")
    if params:
        out["queryParams"] = params
    return out


def _destination(ref: sm.ServiceRef, subset: str | None, port: int | None) -> dict[str, Any]:
    d: dict[str, Any] = {"host": fqdn(ref)}
    if subset:
        d["subset"] = subset
    if port is not None:
        d["port"] = {"number": port}
    return d


def _headers(ops: sm.HeaderOps) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ops.set:
        out["set"] = dict(sorted(ops.set.items()))
    if ops.add:
        out["add"] = dict(sorted(ops.add.items()))
    if ops.remove:
        out["remove"] = list(ops.remove)
    return out


def _http_route(export: Export, route: sm.Route, i: int, rule: sm.RouteRule) -> dict[str, Any]:
    where = res_name(route)
    out: dict[str, Any] = {}
    if rule.name:
        out["name"] = rule.name
    if rule.matches:
        out["match"] = [_match(export, where, f"spec.rules[{i}].matches[{j}]", m)
                        for j, m in enumerate(rule.matches)]
        for m in out["match"]:
            if not m:
                m["uri"] = {"prefix": "/"}
    single = len(rule.destinations) == 1
    out["route"] = [
        {"destination": _destination(d.service, d.subset, d.port),
         **({} if single and d.weight == 100 else {"weight": d.weight})}
        for d in rule.destinations
    ]
    if rule.timeout is not None:
        out["timeout"] = duration(rule.timeout)
    # Istio retries twice by default; meshcd retries only when asked.
    retries: dict[str, Any] = {"attempts": 0}
    if rule.retries is not None:
        retries = {"attempts": rule.retries.attempts}
        if rule.retries.per_try_timeout is not None:
            retries["perTryTimeout"] = duration(rule.retries.per_try_timeout)
        retries["retryOn"] = ",".join(rule.retries.retry_on) or DEFAULT_RETRY_ON
    out["retries"] = retries
    if rule.fault is not None and (rule.fault.delay or rule.fault.abort):
        fault: dict[str, Any] = {}
        if rule.fault.delay is not None:
            fault["delay"] = {"fixedDelay": duration(rule.fault.delay.fixed),
                              "percentage": {"value": rule.fault.delay.percent}}
        if rule.fault.abort is not None:
            fault["abort"] = {"httpStatus": rule.fault.abort.http_status,
                              "percentage": {"value": rule.fault.abort.percent}}
        out["fault"] = fault
    if rule.mirror is not None:
        mi = rule.mirror
        out["mirror"] = _destination(mi.service, mi.subset, mi.port)
        out["mirrorPercentage"] = {"value": mi.percent}
    if rule.headers is not None:
        h = {k: v for k, v in (("request", _headers(rule.headers.request)),
                               ("response", _headers(rule.headers.response))) if v}
        if h:
            out["headers"] = h
    return out


def _virtual_services(model: sm.ConfigModel, export: Export) -> None:
    for _host, routes in sorted(model.routes_by_host.items()):
        route = routes[0]  # one Route per host (finding MCD1xx otherwise)
        spec = {
            "hosts": [fqdn(route.host)],
            "http": [_http_route(export, route, i, r) for i, r in enumerate(route.rules)],
        }
        _emit(export, k8s(NETWORKING, "VirtualService", route.name, route.namespace, spec))


def _sidecars(model: sm.ConfigModel, export: Export) -> None:
    for svc in model.services:
        if svc.egress is None or model.service(svc.ref) is not svc:
            continue
        hosts = [f"{r.namespace}/{fqdn(r)}" for r in svc.egress if model.service(r) is not None]
        _emit(export, k8s(NETWORKING, "Sidecar", svc.name, svc.namespace, {
            "workloadSelector": {"labels": {APP_LABEL: svc.name}},
            "egress": [{"hosts": hosts or ["~/*"]}],  # `~/*`: no service at all
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
        }))


def _telemetry(model: sm.ConfigModel, export: Export) -> None:
    mesh = model.mesh
    if mesh is None:
        return
    t = mesh.telemetry
    spec: dict[str, Any] = {"tracing": [{"randomSamplingPercentage": t.tracing_sampling_percent}]}
    if t.access_log_sampling_percent <= 0:
        spec["accessLogging"] = [{"disabled": True}]
    else:
        spec["accessLogging"] = [{"providers": [{"name": "envoy"}]}]
        if t.access_log_sampling_percent < 100:
            export.warn(res_name(mesh), "spec.telemetry.accessLogSamplingPercent: Istio's "
                        "Telemetry cannot sample access logs by percentage; every request is logged")
    _emit(export, k8s(TELEMETRY, "Telemetry", "mesh-default", mesh.root_namespace, spec))


def export_istio(model: sm.ConfigModel) -> Export:
    export = Export()
    _virtual_services(model, export)
    _destination_rules(model, export)
    _authorization_policies(model, export)
    _peer_authentications(model, export)
    _sidecars(model, export)
    _telemetry(model, export)
    return export.sorted()


__all__ = ["authz_rule", "export_istio"]
