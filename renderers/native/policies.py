"""Which authorization policies apply to a service (Istio selection) and their proxy form,
and the effective inbound mTLS mode. Shared by the renderer, the reachability analysis and
the plan's access matrix, so all three see exactly what a proxy enforces."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from proxy_runtime.config import model as pc
from reconciler.language import model as sm


def root_namespace(model: sm.ConfigModel) -> str:
    mesh = model.mesh
    return mesh.root_namespace if mesh else "meshcd-system"


def mesh_mtls(model: sm.ConfigModel) -> str:
    mesh = model.mesh
    return mesh.mtls.mode if mesh else "STRICT"


def default_deny(model: sm.ConfigModel) -> bool:
    mesh = model.mesh
    return bool(mesh and mesh.default_deny)


def traffic_policy(model: sm.ConfigModel, key: tuple[str, str]) -> sm.TrafficPolicy | None:
    tps = model.traffic_policies_by_service.get(key)
    return tps[0] if tps else None  # a second one is a finding; the first wins


def service_mtls(model: sm.ConfigModel, key: tuple[str, str]) -> str:
    """The service-level inbound mode: its TrafficPolicy's, else the Mesh's."""
    tp = traffic_policy(model, key)
    return tp.mtls.mode if tp is not None and tp.mtls is not None else mesh_mtls(model)


def subset_mtls(model: sm.ConfigModel, key: tuple[str, str], subset: str | None) -> str:
    """The mode of one subset's endpoints: the subset override, else the service's."""
    tp = traffic_policy(model, key)
    if tp is not None and subset is not None:
        for sp in tp.subsets:
            if sp.name == subset and sp.mtls is not None:
                return sp.mtls.mode
    return service_mtls(model, key)


def proxy_mtls(model: sm.ConfigModel, svc: sm.Service, labels: Mapping[str, str]) -> str:
    """The inbound mode of one proxy: the first TrafficPolicy subset override (in the policy's
    order) whose Service subset the proxy's labels satisfy, else the service's mode. This is
    the only place a proxy's labels change its config."""
    tp = traffic_policy(model, svc.ref.key)
    if tp is not None:
        for sp in tp.subsets:
            if sp.mtls is None:
                continue
            subset = svc.subset(sp.name)
            if subset is not None and all(labels.get(k) == v for k, v in subset.labels.items()):
                return sp.mtls.mode
    return service_mtls(model, svc.ref.key)


def selects(policy: sm.AuthorizationPolicy, svc: sm.Service, root_ns: str) -> bool:
    """Istio selection: `selector.services` names it; or no selector and the policy is in the
    service's namespace (namespace-wide) or in the root namespace (mesh-wide)."""
    sel = policy.selector
    if sel is not None and sel.services:
        return svc.ref in sel.services
    return policy.namespace in (svc.namespace, root_ns)


def selected_policies(model: sm.ConfigModel, svc: sm.Service) -> tuple[sm.AuthorizationPolicy, ...]:
    """The spec policies that apply to `svc`, sorted by `<namespace>/<name>`."""
    by_service, by_namespace, mesh_wide = _selection_index(model)
    found = {
        (p.namespace, p.name): p
        for group in (mesh_wide, by_namespace.get(svc.namespace, ()), by_service.get(svc.ref.key, ()))
        for p in group
    }
    return tuple(found[k] for k in sorted(found))


_Index = tuple[
    Mapping[tuple[str, str], tuple[sm.AuthorizationPolicy, ...]],
    Mapping[str, tuple[sm.AuthorizationPolicy, ...]],
    tuple[sm.AuthorizationPolicy, ...],
]


@lru_cache(maxsize=4)
def _selection_index(model: sm.ConfigModel) -> _Index:
    """Policies by the service their selector names, namespace-wide ones by namespace, and the
    mesh-wide ones (no selector, in rootNamespace). The first of duplicate names wins."""
    root_ns = root_namespace(model)
    by_service: dict[tuple[str, str], list[sm.AuthorizationPolicy]] = {}
    by_namespace: dict[str, list[sm.AuthorizationPolicy]] = {}
    mesh_wide: list[sm.AuthorizationPolicy] = []
    seen: set[tuple[str, str]] = set()
    for pol in model.authorization_policies:
        if (pol.namespace, pol.name) in seen:
            continue
        seen.add((pol.namespace, pol.name))
        sel = pol.selector
        if sel is not None and sel.services:
            for ref in sel.services:
                by_service.setdefault(ref.key, []).append(pol)
        elif pol.namespace == root_ns:
            mesh_wide.append(pol)
        else:
            by_namespace.setdefault(pol.namespace, []).append(pol)
    return (
        {k: tuple(v) for k, v in by_service.items()},
        {k: tuple(v) for k, v in by_namespace.items()},
        tuple(mesh_wide),
    )


def _source(s: sm.RuleSource) -> pc.Source:
    return pc.Source(
        principals=s.principals,
        not_principals=s.not_principals,
        namespaces=s.namespaces,
        not_namespaces=s.not_namespaces,
        ip_blocks=s.ip_blocks,
        not_ip_blocks=s.not_ip_blocks,
    )


def _operation(o: sm.RuleOperation) -> pc.Operation:
    return pc.Operation(
        hosts=o.hosts,
        not_hosts=o.not_hosts,
        ports=o.ports,
        not_ports=o.not_ports,
        methods=o.methods,
        not_methods=o.not_methods,
        paths=o.paths,
        not_paths=o.not_paths,
    )


def _action(a: str) -> pc.Action:
    if a == "DENY":
        return "DENY"
    if a == "AUDIT":
        return "AUDIT"
    return "ALLOW"


@lru_cache(maxsize=65536)
def to_proxy_policy(policy: sm.AuthorizationPolicy) -> pc.AuthorizationPolicy:
    """The spec policy in the snapshot's form (same Istio structure), named `<ns>/<name>`."""
    return pc.AuthorizationPolicy(
        name=f"{policy.namespace}/{policy.name}",
        action=_action(policy.action),
        rules=tuple(
            pc.Rule(
                sources=tuple(_source(f.source) for f in r.from_),
                operations=tuple(_operation(t.operation) for t in r.to),
                when=tuple(pc.Condition(c.key, c.values, c.not_values) for c in r.when),
            )
            for r in policy.rules
        ),
    )


def proxy_policies(model: sm.ConfigModel, svc: sm.Service) -> tuple[pc.AuthorizationPolicy, ...]:
    return tuple(to_proxy_policy(p) for p in selected_policies(model, svc))


__all__ = [
    "default_deny",
    "mesh_mtls",
    "proxy_mtls",
    "proxy_policies",
    "root_namespace",
    "selected_policies",
    "selects",
    "service_mtls",
    "subset_mtls",
    "to_proxy_policy",
    "traffic_policy",
]
