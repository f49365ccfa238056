"""Gateway API in the mesh (GAMMA) style: one HTTPRoute per Route, attached to the host's
Service (`parentRefs: [{kind: Service}]`), plus one Service per subset a route sends to
(Gateway API routes to Services, not to label subsets).

It has no retries, fault injection or authorization in its standard channel, and orders rules
by match specificity rather than by rule order; each of those is a warning naming the
resource. See docs/exporters.md.
"""

from __future__ import annotations

import itertools
from typing import Any

from reconciler.language import model as sm

from .common import (
    APP_LABEL,
    Export,
    dump_yaml,
    duration,
    file_name,
    k8s,
    res_name,
)

GATEWAY = "gateway.networking.k8s.io/v1"
_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def _esc(text: str) -> str:
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


def _emit(export: Export, doc: dict[str, Any]) -> None:
    meta = doc["metadata"]
    export.add(file_name(meta.get("namespace"), doc["kind"], meta["name"]), dump_yaml(doc))


def _path(p: sm.PathMatch | None) -> dict[str, str]:
    """meshcd prefixes are plain string prefixes (`/api` matches `/apix`); Gateway API's
    PathPrefix matches whole path segments, so a prefix other than `/` is a regex."""
    if p is None or (p.prefix is not None and p.prefix in ("", "/")):
        return {"type": "PathPrefix", "value": "/"}
    if p.exact is not None:
        return {"type": "Exact", "value": p.exact}
    if p.prefix is not None:
        return {"type": "RegularExpression", "value": _esc(p.prefix) + ".*"}
    return {"type": "RegularExpression", "value": p.regex or ""}


def _value(exact: str | None, prefix: str | None, regex: str | None) -> dict[str, str]:
    if exact is not None:
        return {"type": "Exact", "value": exact}
    if prefix is not None:
        return {"type": "RegularExpression", "value": _esc(prefix) + ".*"}
    return {"type": "RegularExpression", "value": regex or ""}


def _matches(export: Export, where: str, path: str, m: sm.Match) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"path": _path(m.path)}
    headers = []
    for i, h in enumerate(m.headers):
        if h.present is None:
            headers.append({"name": h.name, **_value(h.exact, h.prefix, h.regex)})
        elif h.present:
            headers.append({"name": h.name, "type": "RegularExpression", "value": ".*"})
        else:
            export.warn(where, f"{path}.headers[{i}]: Gateway API cannot match an absent header "
                               f"({h.name}); left out (the rule matches more)")
    params = []
    for i, q in enumerate(m.query_params):
        if q.present is None:
            params.append({"name": q.name, **_value(q.exact, None, q.regex)})
        elif q.present:
            params.append({"name": q.name, "type": "RegularExpression", "value": ".*"})
        else:
            export.warn(where, f"{path}.queryParams[{i}]: Gateway API cannot match an absent "
                               f"query parameter ({q.name}); left out (the rule matches more)")
    if headers:
        base["headers"] = headers
    if params:
        base["queryParams"] = params
    if not m.methods:
        return [base]
    # One method per match in Gateway API: a block with several becomes several matches.
    return [{**base, "method": method} for method in m.methods]


def _port(model: sm.ConfigModel, ref: sm.ServiceRef, port: int | None) -> int | None:
    """A Service backendRef needs a port: the one given, else the service's first http port
    (meshcd's proxy uses the port the request came in on; one HTTPRoute serves every port)."""
    if port is not None:
        return port
    svc = model.service(ref)
    if svc is None or not svc.ports:
        return None
    return next((p.number for p in svc.ports if p.protocol == "http"), svc.ports[0].number)


def subset_service_name(ref: sm.ServiceRef, subset: str) -> str:
    return f"{ref.name}-{subset}"


class _Exporter:
    def __init__(self, model: sm.ConfigModel) -> None:
        self.model = model
        self.export = Export()
        self.subsets: set[tuple[sm.ServiceRef, str]] = set()

    def backend(self, route: sm.Route, ref: sm.ServiceRef, subset: str | None,
                port: int | None) -> dict[str, Any]:
        name = ref.name
        if subset:
            name = subset_service_name(ref, subset)
            self.subsets.add((ref, subset))
        out: dict[str, Any] = {"name": name}
        if ref.namespace != route.namespace:
            out["namespace"] = ref.namespace
        p = _port(self.model, ref, port)
        if p is not None:
            out["port"] = p
        return out

    def rule(self, route: sm.Route, i: int, rule: sm.RouteRule) -> dict[str, Any]:
        where = res_name(route)
        at = f"spec.rules[{i}]"
        out: dict[str, Any] = {}
        if rule.matches:
            out["matches"] = [x for j, m in enumerate(rule.matches)
                              for x in _matches(self.export, where, f"{at}.matches[{j}]", m)]
        for k, d in enumerate(rule.destinations):
            svc = self.model.service(d.service)
            if d.port is None and svc is not None and sum(
                    p.protocol == "http" for p in svc.ports) > 1:
                self.export.warn(where, (
                    f"{at}.destinations[{k}].port: not given, so meshcd keeps the port the "
                    f"request came in on; a backendRef needs one: {_port(self.model, d.service, None)}"))
        single = len(rule.destinations) == 1
        out["backendRefs"] = [
            {**self.backend(route, d.service, d.subset, d.port),
             **({} if single and d.weight == 100 else {"weight": d.weight})}
            for d in rule.destinations
        ]
        filters: list[dict[str, Any]] = []
        if rule.headers is not None:
            for kind, ops in (("RequestHeaderModifier", rule.headers.request),
                              ("ResponseHeaderModifier", rule.headers.response)):
                mod: dict[str, Any] = {}
                if ops.set:
                    mod["set"] = [{"name": k, "value": v} for k, v in sorted(ops.set.items())]
                if ops.add:
                    mod["add"] = [{"name": k, "value": v} for k, v in sorted(ops.add.items())]
                if ops.remove:
                    mod["remove"] = list(ops.remove)
                if mod:
                    key = kind[0].lower() + kind[1:]
                    filters.append({"type": kind, key: mod})
        if rule.mirror is not None:
            mi = rule.mirror
            mirror: dict[str, Any] = {"backendRef": self.backend(route, mi.service, mi.subset, mi.port)}
            if mi.percent < 100:
                if mi.percent == int(mi.percent):
                    mirror["percent"] = int(mi.percent)
                else:
                    mirror["fraction"] = {"numerator": round(mi.percent * 10000),
                                          "denominator": 1000000}
            filters.append({"type": "RequestMirror", "requestMirror": mirror})
        if filters:
            out["filters"] = filters
        if rule.timeout is not None:
            out["timeouts"] = {"request": duration(rule.timeout)}
        if rule.retries is not None:
            r = rule.retries
            self.export.warn(where, f"{at}.retries: Gateway API's standard channel has no retries "
                                    f"({r.attempts} attempt(s) on {','.join(r.retry_on) or '5xx,connect-failure,reset'} "
                                    "not exported)")
        if rule.fault is not None and (rule.fault.delay or rule.fault.abort):
            self.export.warn(where, f"{at}.fault: Gateway API has no fault injection; not exported")
        return out

    def route(self, route: sm.Route) -> None:
        host = self.model.service(route.host)
        parent: dict[str, Any] = {"group": "", "kind": "Service", "name": route.host.name}
        if route.host.namespace != route.namespace:
            parent["namespace"] = route.host.namespace
        rules = [self.rule(route, i, r) for i, r in enumerate(route.rules)]
        self.order_warnings(route)
        spec = {"parentRefs": [parent], "rules": rules}
        _emit(self.export, k8s(GATEWAY, "HTTPRoute", route.name, route.namespace, spec))
        if host is not None and any(p.protocol == "tcp" for p in host.ports):
            self.export.warn(res_name(route), "spec.host: the HTTPRoute also attaches to the "
                             "service's tcp ports, where it does not apply")

    def order_warnings(self, route: sm.Route) -> None:
        """meshcd takes the first rule that matches; Gateway API the most specific match. Two
        rules with conditions may therefore swap; a catch-all last rule cannot."""
        specific = [i for i, r in enumerate(route.rules) if not r.is_catch_all]
        for a, b in itertools.pairwise(specific):
            ra, rb = route.rules[a], route.rules[b]
            self.export.warn(res_name(route), (
                f"spec.rules[{b}] ({rb.name or b}) follows spec.rules[{a}] ({ra.name or a}): "
                "Gateway API picks the most specific match, not the first, so a request both "
                "match may go to the later one"))

    def subset_services(self) -> None:
        for ref, subset in sorted(self.subsets):
            svc = self.model.service(ref)
            sub = svc.subset(subset) if svc is not None else None
            if svc is None or sub is None:
                continue
            doc = k8s("v1", "Service", subset_service_name(ref, subset), ref.namespace, {
                "selector": {APP_LABEL: ref.name, **dict(sorted(sub.labels.items()))},
                "ports": [{"name": p.name, "port": p.number, "targetPort": p.number,
                           "protocol": "TCP",
                           **({"appProtocol": "http"} if p.protocol == "http" else {})}
                          for p in svc.ports],
            })
            _emit(self.export, doc)

    def unexpressed(self) -> None:
        mesh = self.model.mesh
        if mesh is not None:
            self.export.warn(res_name(mesh), "spec.mtls, spec.authorization, spec.telemetry: "
                             "Gateway API has no mesh-wide settings; not exported")
        for p in self.model.authorization_policies:
            self.export.warn(res_name(p), "Gateway API has no authorization; not exported")
        for tp in self.model.traffic_policies:
            fields = [n for n, v in (("loadBalancer", tp.load_balancer),
                                     ("connectionPool", tp.connection_pool),
                                     ("outlierDetection", tp.outlier_detection),
                                     ("mtls", tp.mtls)) if v is not None]
            if tp.subsets:
                fields.append("subsets")
            if fields:
                self.export.warn(res_name(tp), f"spec.{', spec.'.join(fields)}: Gateway API has "
                                 "no traffic policy; not exported")
        for svc in self.model.services:
            if svc.egress is not None:
                self.export.warn(res_name(svc), "spec.egress: Gateway API cannot restrict what a "
                                 "service calls; not exported")


def export_gateway_api(model: sm.ConfigModel) -> Export:
    ex = _Exporter(model)
    for _, routes in sorted(model.routes_by_host.items()):
        ex.route(routes[0])
    ex.subset_services()
    ex.unexpressed()
    return ex.export.sorted()


__all__ = ["export_gateway_api", "subset_service_name"]
