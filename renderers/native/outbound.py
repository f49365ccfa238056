"""Outbound config for calling one service: its virtual hosts (from its Route, or a default
route) and the clusters they use, each cluster with endpoints, load balancing, pools,
outlier detection and TLS origination. Built once per (callee, caller namespace) and shared
by every snapshot that calls it."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from proxy_runtime.config import model as pc
from reconciler.language import model as sm

from .policies import subset_mtls, traffic_policy

Token = tuple[str, ...]

TCP_PORT_BASE = 30000
TCP_PORT_SPAN = 10000


def cluster_name(ref: sm.ServiceRef, port: int, subset: str | None) -> str:
    """`<svc>.<ns>|<port>[|<subset>]`, as docs/proxy-snapshot.md names them."""
    base = f"{ref.name}.{ref.namespace}|{port}"
    return f"{base}|{subset}" if subset else base


def domains(ref: sm.ServiceRef, port: int | None, caller_namespace: str) -> tuple[str, ...]:
    """Host header values for a service (and port): `name.ns`, `name.ns.svc`,
    `name.ns.svc.cluster.local`, plus the bare `name` for callers in the same namespace (as
    Kubernetes DNS search paths do). With a port each gets `:port`."""
    names = [f"{ref.name}.{ref.namespace}", f"{ref.name}.{ref.namespace}.svc",
             f"{ref.name}.{ref.namespace}.svc.cluster.local"]
    if ref.namespace == caller_namespace:
        names.insert(0, ref.name)
    return tuple(names if port is None else [f"{n}:{port}" for n in names])


def tcp_port(ref: sm.ServiceRef, port: int, taken: set[int]) -> int:
    """A stable local port for a TCP forward: a hash of (service, port) in
    TCP_PORT_BASE..+SPAN, probing upward past ports already taken in this snapshot."""
    h = zlib.crc32(f"{ref.namespace}/{ref.name}:{port}".encode()) % TCP_PORT_SPAN
    for i in range(TCP_PORT_SPAN):
        p = TCP_PORT_BASE + (h + i) % TCP_PORT_SPAN
        if p not in taken:
            taken.add(p)
            return p
    raise ValueError("no free local port for a tcp forward")


@dataclass(frozen=True, slots=True)
class ClusterPiece:
    cluster: pc.Cluster
    deps: frozenset[Token]


@dataclass(frozen=True, slots=True)
class OutboundPiece:
    """What calling `callee` needs: HTTP virtual hosts, TCP forwards (service port, cluster)
    and the names of every cluster they reference."""

    callee: sm.ServiceRef
    virtual_hosts: tuple[pc.VirtualHost, ...]
    tcp: tuple[tuple[int, str], ...]
    clusters: tuple[str, ...]
    deps: frozenset[Token]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _pool(p: sm.ConnectionPool | None) -> pc.ConnectionPool:
    d = pc.ConnectionPool()
    if p is None:
        return d
    return pc.ConnectionPool(
        max_connections=p.max_connections if p.max_connections is not None else d.max_connections,
        max_pending_requests=(
            p.max_pending_requests if p.max_pending_requests is not None else d.max_pending_requests
        ),
        max_requests_per_connection=(
            p.max_requests_per_connection
            if p.max_requests_per_connection is not None
            else d.max_requests_per_connection
        ),
        connect_timeout_ms=(
            _ms(p.connect_timeout) if p.connect_timeout is not None else d.connect_timeout_ms
        ),
    )


def _outlier(o: sm.OutlierDetection | None) -> pc.OutlierDetection | None:
    if o is None:
        return None
    d = pc.OutlierDetection()
    return pc.OutlierDetection(
        consecutive_5xx=o.consecutive_5xx if o.consecutive_5xx is not None else d.consecutive_5xx,
        interval_ms=_ms(o.interval) if o.interval is not None else d.interval_ms,
        base_ejection_time_ms=(
            _ms(o.base_ejection_time) if o.base_ejection_time is not None else d.base_ejection_time_ms
        ),
        max_ejection_percent=(
            float(o.max_ejection_percent)
            if o.max_ejection_percent is not None
            else d.max_ejection_percent
        ),
    )


def _lb(lb: sm.LoadBalancer | None) -> tuple[pc.LbPolicy, pc.HashKey | None]:
    if lb is None:
        return "round_robin", None
    if lb.type == "consistent_hash":
        h = lb.hash_on or sm.HashOn(source_ip=True)
        return "consistent_hash", pc.HashKey(header=h.header, cookie=h.cookie, source_ip=h.source_ip)
    if lb.type == "least_request":
        return "least_request", None
    if lb.type == "random":
        return "random", None
    return "round_robin", None


def build_cluster(
    model: sm.ConfigModel, ref: sm.ServiceRef, port: int, subset: str | None
) -> ClusterPiece:
    """The cluster for (service, port, subset). TrafficPolicy blocks apply, a subset's block
    replacing the service's block of the same kind. Endpoints: the static endpoints in the
    subset, the address's port shifted by the port's index in the Service (see targets.py)."""
    deps: frozenset[Token] = frozenset({("mesh",), ("svc", *ref.key), ("tp", *ref.key)})
    name = cluster_name(ref, port, subset)
    svc = model.service(ref)
    if svc is None:
        return ClusterPiece(pc.Cluster(name=name), deps)
    index = next((i for i, p in enumerate(svc.ports) if p.number == port), 0)
    sport = svc.port(port)
    protocol: pc.Protocol = "tcp" if sport is not None and sport.protocol == "tcp" else "http"
    eps: list[pc.Endpoint] = []
    for ep in svc.endpoints_in(subset):
        hp = ep.split()
        if hp is None:
            continue
        host, p = hp
        host_text = f"[{host}]" if ":" in host else host
        eps.append(pc.Endpoint(address=f"{host_text}:{p + index}", labels=dict(sorted(ep.labels.items()))))
    eps.sort(key=lambda e: e.address)
    tp = traffic_policy(model, ref.key)
    lb, pool, outlier = (tp.load_balancer, tp.connection_pool, tp.outlier_detection) if tp else (None, None, None)
    if tp is not None and subset is not None:
        for sp in tp.subsets:
            if sp.name == subset:
                lb = sp.load_balancer or lb
                pool = sp.connection_pool or pool
                outlier = sp.outlier_detection or outlier
    lb_policy, hash_key = _lb(lb)
    tls = None
    if subset_mtls(model, ref.key, subset) != "DISABLE" and model.mesh is not None:
        tls = pc.UpstreamTls(
            mode="MUTUAL",
            sni=f"{ref.name}.{ref.namespace}",
            peer_spiffe_ids=(model.mesh.spiffe_id(svc.namespace, svc.service_account),),
        )
    cluster = pc.Cluster(
        name=name,
        endpoints=tuple(eps),
        protocol=protocol,
        lb_policy=lb_policy,
        hash_key=hash_key,
        connection_pool=_pool(pool),
        outlier_detection=_outlier(outlier),
        tls=tls,
    )
    return ClusterPiece(cluster, deps)


# --- routes ---------------------------------------------------------------------------------


def _dest_port(model: sm.ConfigModel, ref: sm.ServiceRef, port: int | None, vhost_port: int,
               host: sm.ServiceRef) -> int:
    """A destination without a port: the virtual host's port on the host service itself; on
    another service the port with the same number, else its first port."""
    if port is not None:
        return port
    if ref == host:
        return vhost_port
    svc = model.service(ref)
    if svc is None or not svc.ports or svc.port(vhost_port) is not None:
        return vhost_port
    return svc.ports[0].number


def _path(p: sm.PathMatch | None) -> pc.PathMatch | None:
    if p is None:
        return None
    return pc.PathMatch(exact=p.exact, prefix=p.prefix, regex=p.regex)


def _match(m: sm.Match) -> pc.RouteMatch:
    return pc.RouteMatch(
        path=_path(m.path),
        methods=m.methods,
        headers=tuple(
            pc.HeaderMatch(h.name, exact=h.exact, prefix=h.prefix, regex=h.regex, present=h.present)
            for h in m.headers
        ),
        query_params=tuple(
            pc.QueryParamMatch(q.name, exact=q.exact, regex=q.regex, present=q.present)
            for q in m.query_params
        ),
    )


def _edits(ops: sm.HeaderOps) -> pc.HeaderEdits | None:
    if not (ops.add or ops.set or ops.remove):
        return None
    return pc.HeaderEdits(
        add=dict(sorted(ops.add.items())), set=dict(sorted(ops.set.items())), remove=ops.remove
    )


_RETRY_ON: dict[str, pc.RetryOn] = {r: r for r in pc.RETRY_ON}


def _route_action(
    model: sm.ConfigModel, rule: sm.RouteRule, host: sm.ServiceRef, vport: int, name: str,
    used: set[tuple[sm.ServiceRef, int, str | None]],
) -> pc.Route:
    clusters = []
    for d in rule.destinations:
        p = _dest_port(model, d.service, d.port, vport, host)
        used.add((d.service, p, d.subset))
        clusters.append(pc.WeightedCluster(cluster_name(d.service, p, d.subset), d.weight))
    retries = None
    if rule.retries is not None:
        r = rule.retries
        retry_on = tuple(_RETRY_ON[x] for x in r.retry_on if x in _RETRY_ON)
        retries = pc.RetryPolicy(
            attempts=r.attempts,
            per_try_timeout_ms=_ms(r.per_try_timeout) if r.per_try_timeout is not None else None,
            **({"retry_on": retry_on} if retry_on else {}),
        )
    fault = None
    if rule.fault is not None and (rule.fault.delay or rule.fault.abort):
        f = rule.fault
        fault = pc.Fault(
            delay=pc.FaultDelay(_ms(f.delay.fixed), float(f.delay.percent)) if f.delay else None,
            abort=pc.FaultAbort(f.abort.http_status, float(f.abort.percent)) if f.abort else None,
        )
    mirror = None
    if rule.mirror is not None:
        m = rule.mirror
        p = _dest_port(model, m.service, m.port, vport, host)
        used.add((m.service, p, m.subset))
        mirror = pc.Mirror(cluster_name(m.service, p, m.subset), float(m.percent))
    hp = rule.headers
    return pc.Route(
        clusters=tuple(clusters),
        name=name,
        timeout_ms=_ms(rule.timeout) if rule.timeout is not None else None,
        retries=retries,
        fault=fault,
        mirror=mirror,
        request_headers=_edits(hp.request) if hp else None,
        response_headers=_edits(hp.response) if hp else None,
    )


def _routes(
    model: sm.ConfigModel, route: sm.Route | None, host: sm.ServiceRef, vport: int,
    used: set[tuple[sm.ServiceRef, int, str | None]],
) -> tuple[pc.Route, ...]:
    if route is None:  # no Route: everything to the service's own port, all endpoints
        used.add((host, vport, None))
        return (pc.Route(clusters=(pc.WeightedCluster(cluster_name(host, vport, None), 100),),
                         name="default"),)
    out: list[pc.Route] = []
    for i, rule in enumerate(route.rules):
        base = _route_action(model, rule, host, vport, rule.name or f"rule-{i}", used)
        if not rule.matches:
            out.append(base)
            continue
        # A spec rule ORs its match blocks; a proxy route ANDs one match: one route per block.
        for m in rule.matches:
            out.append(pc.Route(
                clusters=base.clusters, match=_match(m), name=base.name,
                timeout_ms=base.timeout_ms, retries=base.retries, fault=base.fault,
                mirror=base.mirror, request_headers=base.request_headers,
                response_headers=base.response_headers,
            ))
    return tuple(out)


def build_outbound(
    model: sm.ConfigModel, callee: sm.Service, caller_namespace: str
) -> tuple[OutboundPiece, set[tuple[sm.ServiceRef, int, str | None]]]:
    """Virtual hosts for each http port of `callee` (the bare host names go to its first http
    port), TCP forwards for its tcp ports, and the clusters they use."""
    ref = callee.ref
    route = model.route_for(ref)
    used: set[tuple[sm.ServiceRef, int, str | None]] = set()
    vhosts: list[pc.VirtualHost] = []
    tcp: list[tuple[int, str]] = []
    first_http = True
    for port in callee.ports:
        if port.protocol == "tcp":
            used.add((ref, port.number, None))
            tcp.append((port.number, cluster_name(ref, port.number, None)))
            continue
        doms = domains(ref, port.number, caller_namespace)
        if first_http:
            doms = domains(ref, None, caller_namespace) + doms
            first_http = False
        vhosts.append(pc.VirtualHost(
            name=f"{ref.name}.{ref.namespace}:{port.number}",
            domains=doms,
            routes=_routes(model, route, ref, port.number, used),
        ))
    deps: set[Token] = {("mesh",), ("svc", *ref.key), ("route", *ref.key)}
    for dref, _, _ in used:
        deps.add(("svc", *dref.key))
        deps.add(("tp", *dref.key))
    names = tuple(sorted({cluster_name(r, p, s) for r, p, s in used}))
    piece = OutboundPiece(ref, tuple(sorted(vhosts, key=lambda v: v.name)), tuple(tcp), names,
                          frozenset(deps))
    return piece, used


__all__ = [
    "TCP_PORT_BASE",
    "ClusterPiece",
    "OutboundPiece",
    "build_cluster",
    "build_outbound",
    "cluster_name",
    "domains",
    "tcp_port",
]
