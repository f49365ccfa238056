"""The config a request runs on: H3's CompiledConfig plus the run-time objects built from it
(clusters with pools and balancers, TLS contexts, per-route extras in bytes form). Built
completely before the swap; immutable afterwards (apart from counters)."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy_runtime.config import Cluster, Endpoint
from proxy_runtime.config.compile import CompiledConfig, CompiledInboundListener
from proxy_runtime.config.routing import CompiledRoute
from proxy_runtime.dataplane.clusters import ClusterRuntime, PoolRegistry
from proxy_runtime.dataplane.forward import NO_RETRY, RetrySettings
from proxy_runtime.dataplane.headers import HeaderEdit, compile_edits
from proxy_runtime.dataplane.tls import client_context, server_context

if TYPE_CHECKING:
    from proxy_runtime.config import Fault, Mirror
    from proxy_runtime.dataplane.downstream import HttpDownstream, Request
    from proxy_runtime.metrics import Stats


@dataclass(frozen=True, slots=True)
class RouteExtras:
    retry: RetrySettings
    timeout: float | None
    fault: Fault | None
    mirror: Mirror | None
    request_edit: HeaderEdit | None
    response_edit: HeaderEdit | None


def _extras(cr: CompiledRoute) -> RouteExtras:
    r = cr.route
    retry = NO_RETRY
    if r.retries is not None:
        retry = RetrySettings(
            r.retries.attempts,
            r.retries.per_try_timeout_ms / 1000.0 if r.retries.per_try_timeout_ms else None,
            tuple(r.retries.retry_on),
        )
    rq = r.request_headers
    rs = r.response_headers
    return RouteExtras(
        retry=retry,
        timeout=r.timeout_ms / 1000.0 if r.timeout_ms else None,
        fault=r.fault,
        mirror=r.mirror,
        request_edit=compile_edits(rq.add, rq.set, rq.remove) if rq is not None else None,
        response_edit=compile_edits(rs.add, rs.set, rs.remove) if rs is not None else None,
    )


def workload_name(compiled: CompiledConfig) -> str:
    if compiled.inbound is not None:
        ib = compiled.inbound.inbound
        return f"{ib.namespace}/{ib.service}"
    ident = compiled.identity
    if ident is not None and ident.spiffe_id:
        parts = ident.spiffe_id.split("/")
        if len(parts) >= 7 and parts[3] == "ns" and parts[5] == "sa":
            return f"{parts[4]}/{parts[6]}"
        return ident.spiffe_id
    return "unknown"


class ActiveConfig:
    def __init__(self, compiled: CompiledConfig, registry: PoolRegistry, stats: Stats,
                 tls_cache: dict[tuple[str, str, str], tuple[ssl.SSLContext, ssl.SSLContext]] | None = None,
                 ) -> None:
        self.compiled = compiled
        self.version = compiled.version
        self.revision = compiled.revision
        self.applied_at = time.time()
        self.workload = workload_name(compiled)
        tel = compiled.telemetry
        self.trace_sampling = tel.tracing_sampling_percent / 100.0
        self.access_log_rate = tel.access_log_sampling_percent / 100.0
        ident = compiled.identity
        self.server_tls: ssl.SSLContext | None = None
        self.client_tls: ssl.SSLContext | None = None
        if compiled.tls_ready and ident is not None:
            assert ident.certificate_pem and ident.private_key_pem and ident.trust_bundle_pem
            # the same identity keeps the same contexts across swaps, so TLS clusters keep
            # their pools (and warm connections); a rotated certificate gets new ones
            material = (ident.certificate_pem, ident.private_key_pem, ident.trust_bundle_pem)
            cached = tls_cache.get(material) if tls_cache is not None else None
            if cached is None:
                try:
                    cached = (server_context(*material), client_context(*material))
                except (ssl.SSLError, ValueError) as exc:
                    raise ValueError(f"identity: cannot load certificate, key or trust bundle: {exc}") from None
                if tls_cache is not None:
                    tls_cache.clear()  # only the current identity is worth keeping
                    tls_cache[material] = cached
            self.server_tls, self.client_tls = cached
        registry.begin()
        self.clusters: dict[str, ClusterRuntime] = {
            name: ClusterRuntime(cc.cluster, registry, self.client_tls, stats)
            for name, cc in compiled.clusters.items()
        }
        # inbound listeners by their port key (the configured port), each with a local app cluster
        self.inbound_by_port: dict[int, tuple[CompiledInboundListener, ClusterRuntime]] = {}
        if compiled.inbound is not None:
            for cl in compiled.inbound.listeners:
                li = cl.listener
                app = Cluster(name=f"inbound|{li.port}", endpoints=(Endpoint(li.local_address),))
                self.inbound_by_port[li.port] = (cl, ClusterRuntime(app, registry, None, stats))
        # Authorization decisions by (principal, peer ip, port, host, method, path): valid while
        # no policy looks at request headers (they are not in the key). Bounded; per config.
        self.authz_cache: dict[tuple[object, ...], bool] | None = None
        if compiled.inbound is not None and not any(
            cond.key.startswith("request.headers")
            for pol in compiled.inbound.inbound.policies for rule in pol.rules for cond in rule.when
        ):
            self.authz_cache = {}
        # Route choices by (host, method, url): valid while no route matches on headers or
        # query parameters (then host, method and path decide). Bounded; per config.
        self.route_cache: dict[tuple[bytes, bytes, bytes], Any] | None = None
        if compiled.outbound is not None and not any(
            r.match.headers or r.match.query_params
            for vh in compiled.outbound.outbound.virtual_hosts for r in vh.routes
        ):
            self.route_cache = {}
        self._extras: dict[int, RouteExtras] = {}
        if compiled.outbound is not None:
            for vh in {id(v): v for v in [*compiled.outbound.hosts.values(),
                                           *([compiled.outbound.wildcard] if compiled.outbound.wildcard else [])]}.values():
                for cr in vh.routes:
                    self._extras[id(cr)] = _extras(cr)

    def route_extras(self, route: CompiledRoute) -> RouteExtras:
        return self._extras[id(route)]

    def hash_key_of(self, cluster: ClusterRuntime, req: Request, conn: HttpDownstream) -> bytes | None:
        hk = cluster.hash_key
        if hk is None:
            return None
        if hk.header is not None:
            return req.header(hk.header.lower().encode())
        if hk.cookie is not None:
            cookie = req.header(b"cookie")
            if cookie:
                want = hk.cookie.encode() + b"="
                for part in cookie.split(b";"):
                    part = part.strip()
                    if part.startswith(want):
                        return part[len(want):]
            return None
        if hk.source_ip:
            return conn.peer_ip.encode()
        return None
