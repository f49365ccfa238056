"""Linkerd authorization policy (policy.linkerd.io): a Server per Service port, and per ALLOW
rule an AuthorizationPolicy (one per source: Linkerd ANDs the authentications a policy
requires, Istio ORs sources) with a MeshTLSAuthentication for identities and a
NetworkAuthentication for ipBlocks; a rule that looks at paths or methods targets an
HTTPRoute (policy.linkerd.io) attached to the Server instead of the Server itself.

Linkerd cannot say everything meshcd can: it has no DENY or AUDIT, no negative matches, no
`when` conditions, no traffic policy. Those are warnings naming the resource; a rule that
cannot be exported exactly is left out (Linkerd then denies what it would allow), never
widened. Routing lives in Gateway API HTTPRoutes, which Linkerd reads: `--format gateway-api`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from reconciler.language import model as sm

from ..native import selected_policies, service_mtls
from .common import APP_LABEL, Export, dump_yaml, file_name, k8s, k8s_name, res_name

POLICY = "policy.linkerd.io/v1beta3"
POLICY_ALPHA = "policy.linkerd.io/v1alpha1"
GROUP = "policy.linkerd.io"
_PRINCIPAL = re.compile(r"^([^/*]+)/ns/([^/*]+)/sa/([^/*]+)$")
_RE2_SPECIAL = set("\\.+*?()|[]{}^$")
ALL_NETWORKS = ("0.0.0.0/0", "::/0")


def _esc(text: str) -> str:
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


def _emit(export: Export, doc: dict[str, Any]) -> None:
    meta = doc["metadata"]
    export.add(file_name(meta.get("namespace"), doc["kind"], meta["name"]), dump_yaml(doc))


def identity(principal: str) -> str | None:
    """An Istio principal as a Linkerd identity: `td/ns/N/sa/A` ->
    `A.N.serviceaccount.identity.linkerd.td`; `*` stays `*`; other patterns: None."""
    if principal == "*":
        return "*"
    m = _PRINCIPAL.match(principal)
    if m is None:
        return None
    td, ns, sa = m.groups()
    return f"{sa}.{ns}.serviceaccount.identity.linkerd.{td}"


def namespace_identity(namespace: str, trust_domain: str) -> str | None:
    if namespace == "*":
        return "*"
    if "*" in namespace:
        return None
    return f"*.{namespace}.serviceaccount.identity.linkerd.{trust_domain}"


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(x[:1].upper() + x[1:] for x in rest)


def _path_match(path: str) -> dict[str, str]:
    if path == "*":
        return {"type": "PathPrefix", "value": "/"}
    if path.startswith("*"):
        return {"type": "RegularExpression", "value": ".*" + _esc(path[1:])}
    if path.endswith("*"):
        return {"type": "RegularExpression", "value": _esc(path[:-1]) + ".*"}
    return {"type": "Exact", "value": path}


def _networks(blocks: tuple[str, ...], excluded: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for b in blocks or ALL_NETWORKS:
        net = ipaddress.ip_network(b, strict=False)
        exc = [e for e in excluded
               if ipaddress.ip_network(e, strict=False).version == net.version
               and ipaddress.ip_network(e, strict=False).subnet_of(net)]  # type: ignore[arg-type]
        entry: dict[str, Any] = {"cidr": str(net)}
        if exc:
            entry["except"] = exc
        out.append(entry)
    return out


class _Exporter:
    def __init__(self, model: sm.ConfigModel) -> None:
        self.model = model
        self.export = Export()
        mesh = model.mesh
        self.trust_domain = mesh.trust_domain if mesh else "cluster.local"
        self.default_deny = bool(mesh and mesh.default_deny)

    def warn(self, r: sm.Resource, message: str) -> None:
        self.export.warn(res_name(r), message)

    def service(self, svc: sm.Service) -> None:
        policies = selected_policies(self.model, svc)
        allows = [p for p in policies if p.action == "ALLOW"]
        mtls = service_mtls(self.model, svc.ref.key)
        if mtls == "DISABLE":
            self.warn(svc, "mTLS mode DISABLE: Linkerd always uses mTLS between meshed pods; "
                           "not exported")
        if not allows and not self.default_deny:
            access = "all-authenticated" if mtls == "STRICT" else "all-unauthenticated"
        else:
            access = "deny"
        servers: dict[int, str] = {}
        for port in svc.ports:
            name = k8s_name(svc.name, port.name)
            servers[port.number] = name
            _emit(self.export, k8s(POLICY, "Server", name, svc.namespace, {
                "podSelector": {"matchLabels": {APP_LABEL: svc.name}},
                "port": port.number,
                "proxyProtocol": "opaque" if port.protocol == "tcp" else "HTTP/1",
                "accessPolicy": access,
            }))
        routed: dict[str, list[str]] = {}  # server -> rules exported as routes on it
        for p in policies:
            if p.action != "ALLOW":
                what = "DENY" if p.action == "DENY" else "AUDIT"
                self.warn(p, f"spec.action: Linkerd has no {what} policies; not exported for "
                             f"{svc.name}.{svc.namespace}"
                             + (" (Linkerd allows what this policy denies)" if what == "DENY" else ""))
                continue
            base = p.name if (p.selector and p.selector.services == (svc.ref,)) else (
                k8s_name(p.name, svc.name))
            for i, rule in enumerate(p.rules):
                self.rule(svc, p, base, i, rule, servers, mtls, routed)
        for server, rules in routed.items():
            # With any HTTPRoute on a Server, Linkerd answers 404 to requests no route matches:
            # a catch-all route keeps them flowing (the Server's own policies authorize them).
            _emit(self.export, k8s(POLICY, "HTTPRoute", k8s_name(server, "default"),
                                   svc.namespace, {
                "parentRefs": [{"group": GROUP, "kind": "Server", "name": server}],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}],
            }))
            if len(rules) > 1:
                self.export.warn(f"Server {svc.namespace}/{server}", (
                    f"rules {', '.join(rules)} become HTTPRoutes on one Server: Linkerd authorizes "
                    "a request by the one route it matches best, so where they overlap a caller "
                    "one of them allows may be denied"))

    def rule(self, svc: sm.Service, p: sm.AuthorizationPolicy, base: str, i: int,
             rule: sm.AuthorizationRule, servers: dict[int, str], mtls: str,
             routed: dict[str, list[str]]) -> None:
        at = f"spec.rules[{i}]"
        for_svc = f"for {svc.name}.{svc.namespace}"
        if rule.when:
            self.warn(p, f"{at}.when: Linkerd cannot express `when` conditions; rule not "
                         f"exported {for_svc} (Linkerd denies the requests it would allow)")
            return
        # Operations and sources are ORed: one Linkerd cannot express is left out on its own
        # (allowing less), and the rule is lost only when none is left.
        ops: list[sm.RuleOperation] = []
        for k, t in enumerate(rule.to):
            bad = [_camel(n) for n in ("hosts", "not_hosts", "not_methods", "not_paths")
                   if getattr(t.operation, n)]
            if bad:
                self.warn(p, f"{at}.to[{k}]: Linkerd cannot express {', '.join(bad)}; this "
                             f"operation is not exported {for_svc} (Linkerd denies the requests "
                             "it would allow)")
            else:
                ops.append(t.operation)
        sources: list[sm.RuleSource] = []
        for k, f in enumerate(rule.from_):
            src = f.source
            bad = [_camel(n) for n in ("not_principals", "not_namespaces") if getattr(src, n)]
            if any(identity(x) is None for x in src.principals):
                bad.append("principal patterns other than exact names and `*`")
            if any(namespace_identity(x, self.trust_domain) is None for x in src.namespaces):
                bad.append("namespace patterns other than exact names and `*`")
            if bad:
                self.warn(p, f"{at}.from[{k}]: Linkerd cannot express {', '.join(bad)}; this "
                             f"source is not exported {for_svc} (Linkerd denies the requests it "
                             "would allow)")
            else:
                sources.append(src)
        if (rule.to and not ops) or (rule.from_ and not sources):
            return
        http_ops = [t.operation for t in rule.to
                    if t.operation.uses_http_fields]
        ops = ops or [sm.RuleOperation()]
        for number, server in servers.items():
            port = svc.port(number)
            on_port = [o for o in ops
                       if (not o.ports or str(number) in o.ports) and str(number) not in o.not_ports]
            if not on_port or port is None:
                continue
            tcp = port.protocol == "tcp"
            if tcp and http_ops:
                continue  # Istio's TCP asymmetry: an ALLOW rule with HTTP fields allows nothing
            target: dict[str, Any] = {"group": GROUP, "kind": "Server", "name": server}
            plain = [o for o in on_port if not (o.methods or o.paths)]
            if not plain and not tcp:
                route = k8s_name(base, f"r{i}", server)
                self.http_route(svc, route, server, on_port)
                target = {"group": GROUP, "kind": "HTTPRoute", "name": route}
                routed.setdefault(server, []).append(f"{p.namespace}/{p.name}[{i}]")
            for j, src in enumerate(sources or [sm.RuleSource()]):
                name = k8s_name(base, f"r{i}", f"s{j}", server)
                self.authorization(svc, name, target, src, mtls)

    def http_route(self, svc: sm.Service, name: str, server: str,
                   ops: list[sm.RuleOperation]) -> None:
        matches: list[dict[str, Any]] = []
        for o in ops:
            paths = [_path_match(x) for x in o.paths] or [{"type": "PathPrefix", "value": "/"}]
            for path in paths:
                if o.methods:
                    matches += [{"path": path, "method": m} for m in o.methods]
                else:
                    matches.append({"path": path})
        _emit(self.export, k8s(POLICY, "HTTPRoute", name, svc.namespace, {
            "parentRefs": [{"group": GROUP, "kind": "Server", "name": server}],
            "rules": [{"matches": matches}],
        }))

    def authorization(self, svc: sm.Service, name: str, target: dict[str, Any],
                      src: sm.RuleSource, mtls: str) -> None:
        refs: list[dict[str, Any]] = []
        ids = [i for i in (identity(x) for x in src.principals) if i]
        ns_ids = [i for i in (namespace_identity(x, self.trust_domain) for x in src.namespaces) if i]
        for suffix, values in (("id", ids), ("ns", ns_ids)):
            if values:
                refs.append(self.mesh_tls(svc, k8s_name(name, suffix), values))
        if src.ip_blocks or src.not_ip_blocks:
            refs.append(self.network(svc, k8s_name(name, "net"), src.ip_blocks, src.not_ip_blocks))
        if not (ids or ns_ids):
            if mtls == "STRICT":  # plaintext is refused: any authenticated identity
                refs.append(self.mesh_tls(svc, k8s_name(name, "any"), ["*"]))
            elif not refs:
                refs.append(self.network(svc, k8s_name(name, "any"), (), ()))
        _emit(self.export, k8s(POLICY_ALPHA, "AuthorizationPolicy", name, svc.namespace, {
            "targetRef": target, "requiredAuthenticationRefs": refs}))

    def mesh_tls(self, svc: sm.Service, name: str, identities: list[str]) -> dict[str, Any]:
        name = k8s_name(name)
        _emit(self.export, k8s(POLICY_ALPHA, "MeshTLSAuthentication", name, svc.namespace,
                               {"identities": identities}))
        return {"group": GROUP, "kind": "MeshTLSAuthentication", "name": name}

    def network(self, svc: sm.Service, name: str, blocks: tuple[str, ...],
                excluded: tuple[str, ...]) -> dict[str, Any]:
        name = k8s_name(name)
        _emit(self.export, k8s(POLICY_ALPHA, "NetworkAuthentication", name, svc.namespace,
                               {"networks": _networks(blocks, excluded)}))
        return {"group": GROUP, "kind": "NetworkAuthentication", "name": name}

    def unexpressed(self) -> None:
        for r in self.model.routes:
            self.warn(r, "routing is not part of Linkerd's policy resources; export it with "
                         "--format gateway-api (Linkerd reads Gateway API HTTPRoutes)")
        for tp in self.model.traffic_policies:
            fields = [n for n, v in (("loadBalancer", tp.load_balancer),
                                     ("connectionPool", tp.connection_pool),
                                     ("outlierDetection", tp.outlier_detection)) if v is not None]
            if any(sp.load_balancer or sp.connection_pool or sp.outlier_detection
                   for sp in tp.subsets):
                fields.append("subsets")
            if fields:
                self.warn(tp, f"spec.{', spec.'.join(fields)}: Linkerd has no such settings; "
                              "not exported")
            if any(sp.mtls for sp in tp.subsets):
                self.warn(tp, "spec.subsets[].mtls: per-subset mTLS modes are not exported")
        for svc in self.model.services:
            if svc.egress is not None:
                self.warn(svc, "spec.egress: Linkerd cannot restrict what a service calls; "
                               "not exported")
        mesh = self.model.mesh
        if mesh is not None and mesh.telemetry != sm.Telemetry():
            self.warn(mesh, "spec.telemetry: Linkerd's sampling is not configured by these "
                            "resources; not exported")


def export_linkerd(model: sm.ConfigModel) -> Export:
    ex = _Exporter(model)
    for svc in sorted(model.services_by_key.values(), key=lambda s: s.ref.key):
        ex.service(svc)
    ex.unexpressed()
    return ex.export.sorted()


__all__ = ["export_linkerd", "identity", "namespace_identity"]
