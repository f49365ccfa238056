"""Per-request logic of the HTTP listeners: outbound (route, fault, mirror, forward) and
inbound (authorize, forward to the local app). Each request reads the active config once at
its start, so a swap never changes a request in flight. Handlers are plain functions: the
common case completes in protocol callbacks; only delays and slow paths spawn a task."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import TYPE_CHECKING

from proxy_runtime.config.authz import AuthzRequest, evaluate, is_allowed
from proxy_runtime.config.routing import (
    CompiledRoute,
    choose_cluster,
    find_virtual_host,
    select_route,
)
from proxy_runtime.dataplane.downstream import HttpDownstream, Request
from proxy_runtime.dataplane.forward import NO_RETRY, Outcome, start_forward
from proxy_runtime.dataplane.headers import StrHeaders
from proxy_runtime.dataplane.tracing import has_trace, new_trace, propagate

if TYPE_CHECKING:
    from proxy_runtime.dataplane.active import ActiveConfig, RouteExtras
    from proxy_runtime.dataplane.downstream import Handler
    from proxy_runtime.runtime import ProxyRuntime

access_log = logging.getLogger("meshcd.access")
audit_log = logging.getLogger("meshcd.audit")

_rand = random.random
_monotonic = time.monotonic
_bits = random.getrandbits

DENIED_BODY = b"RBAC: access denied"
_MISS = object()
_NO_HEADERS: dict[str, str] = {}  # routes consulted through the cache match on no header


def _log_access(cfg: ActiveConfig, direction: str, req: Request, conn: HttpDownstream,
                outcome: Outcome, seconds: float, trace_id: bytes, upstream_cluster: str) -> None:
    access_log.info(json.dumps({
        "direction": direction,
        "method": req.method.decode("latin-1"),
        "path": req.url.decode("latin-1"),
        "host": req.host.decode("latin-1"),
        "status": outcome.status,
        "flags": outcome.flags,
        "duration_ms": round(seconds * 1000, 3),
        "peer": conn.peer_ip,
        "principal": conn.principal,
        "upstream_cluster": upstream_cluster,
        "upstream_host": outcome.endpoint,
        "trace_id": trace_id.decode(),
        "config_version": cfg.version,
    }, separators=(",", ":")))


def make_outbound_handler(runtime: ProxyRuntime) -> Handler:
    stats = runtime.stats

    def record(cfg: ActiveConfig, src: str, dst: str, req: Request, conn: HttpDownstream,
               outcome: Outcome, trace_id: bytes) -> None:
        now = _monotonic()
        seconds = now - req.started
        stats.record("outbound", src, dst, outcome.status or 500, seconds, now + runtime.wall_offset)
        if cfg.access_log_rate and _rand() < cfg.access_log_rate:
            _log_access(cfg, "outbound", req, conn, outcome, seconds, trace_id, dst)

    def handle(conn: HttpDownstream, req: Request) -> None:
        cfg = runtime.active
        assert cfg is not None
        outbound = cfg.compiled.outbound
        if outbound is None:
            conn.respond(404, b"no outbound listener configured\n")
            return
        cache = cfg.route_cache
        if cache is not None:
            # this connection's last choice first (same config): bytes compare faster than
            # a 3-tuple hashes
            memo = conn.route_memo
            if (memo is not None and memo[0] is cache and memo[1] == req.url and memo[2] == req.method
                    and memo[3] == req.host):
                sel = memo[4]
            else:
                key = (req.host, req.method, req.url)
                sel = cache.get(key, _MISS)
                if sel is _MISS:
                    sel = select_route(outbound, req.host.decode("latin-1"), req.method.decode("latin-1"),
                                       req.url.decode("latin-1"), _NO_HEADERS)
                    if len(cache) >= 4096:
                        cache.clear()
                    cache[key] = sel
                conn.route_memo = (cache, req.url, req.method, req.host, sel)
        else:
            sel = select_route(outbound, req.host.decode("latin-1"), req.method.decode("latin-1"),
                               req.url.decode("latin-1"), StrHeaders(req.headers))
        if sel is None:
            host = req.host.decode("latin-1")
            if find_virtual_host(outbound, host) is None:
                body = f"meshcd: no virtual host for Host {host!r}\n".encode()
            else:
                body = (f"meshcd: no route matched {req.method.decode('latin-1')} "
                        f"{req.path.decode('latin-1')} on {host!r}\n").encode()
            outcome = Outcome()
            outcome.status = 404
            outcome.flags = "NR"
            conn.respond(404, body)
            record(cfg, cfg.workload, "unknown", req, conn, outcome, b"")
            return
        route = sel[1]
        extras = cfg.route_extras(route)
        fault = extras.fault
        if fault is not None and fault.delay is not None and _rand() * 100.0 < fault.delay.percent:
            conn.spawn(_delayed(fault.delay.fixed_ms / 1000.0, conn, req, cfg, route, extras))
            return
        proceed(conn, req, cfg, route, extras)

    async def _delayed(seconds: float, conn: HttpDownstream, req: Request, cfg: ActiveConfig,
                       route: CompiledRoute, extras: RouteExtras) -> None:
        await asyncio.sleep(seconds)
        proceed(conn, req, cfg, route, extras)

    def proceed(conn: HttpDownstream, req: Request, cfg: ActiveConfig, route: CompiledRoute,
                extras: RouteExtras) -> None:
        fault = extras.fault
        if fault is not None and fault.abort is not None and _rand() * 100.0 < fault.abort.percent:
            outcome = Outcome()
            outcome.status = fault.abort.http_status
            outcome.flags = "FI"
            conn.respond(fault.abort.http_status, b"fault filter abort")
            record(cfg, cfg.workload, route.clusters[0], req, conn, outcome, b"")
            return
        name = route.clusters[0] if len(route.clusters) == 1 else choose_cluster(route, _rand())
        cluster = cfg.clusters[name]
        headers = req.headers
        if extras.request_edit is not None:
            headers = extras.request_edit(headers)
        mirror = extras.mirror
        trace = b""
        if mirror is None and cluster.hash_key is None and not has_trace(headers):
            # the common case: a new trace, its headers go upstream in wire form (a mirror
            # or a hash on a header needs them in the header list: the general path)
            trace, trace_id = new_trace(cfg.trace_sampling, _bits)
        else:
            headers, trace_id, _ = propagate(headers, cfg.trace_sampling, _bits)

        def done(outcome: Outcome) -> None:
            record(cfg, cfg.workload, name, req, conn, outcome, trace_id)
            if mirror is not None and req.body.replayable and req.body.complete and (
                _rand() * 100.0 < mirror.percent
            ):
                runtime.mirror(cfg, mirror.cluster, req, headers)

        start_forward(conn, req, cluster, headers, extras.retry, extras.timeout, extras.response_edit,
                      None if cluster.hash_key is None else cfg.hash_key_of(cluster, req, conn),
                      Outcome(), done, trace)

    return handle


def make_inbound_handler(runtime: ProxyRuntime, port_key: int) -> Handler:
    stats = runtime.stats

    def handle(conn: HttpDownstream, req: Request) -> None:
        cfg = runtime.active
        assert cfg is not None
        inbound = cfg.inbound_by_port.get(port_key)
        source = conn.principal or "unknown"
        if inbound is None or cfg.compiled.inbound is None:
            conn.respond(503, b"meshcd: listener is being removed\n", keep_alive=False)
            return
        listener, cluster = inbound
        authz = cfg.compiled.inbound.authz
        cache = cfg.authz_cache
        allowed: bool | None = None
        key: tuple[object, ...] = ()
        if cache is not None and not authz.http.audit:
            # this connection's last decision first (same config, so the same principal, peer
            # and port): keep-alive clients repeat their requests, and bytes compare faster
            # than a 6-tuple hashes
            memo = conn.authz_memo
            if (memo is not None and memo[0] is cache and memo[1] == req.path and memo[2] == req.method
                    and memo[3] == req.host):
                allowed = memo[4]
            else:
                key = (conn.principal, conn.peer_ip, conn.local_ip, conn.sni, listener.service_port,
                       req.host, req.method, req.path)
                allowed = cache.get(key)
                if allowed is not None:
                    conn.authz_memo = (cache, req.path, req.method, req.host, allowed)
        if allowed is None:
            areq = AuthzRequest(
                principal=conn.principal,
                source_ip=conn.peer_ip,
                destination_ip=conn.local_ip or None,
                destination_port=listener.service_port,
                sni=conn.sni,
                host=req.host.decode("latin-1"),
                method=req.method.decode("latin-1"),
                path=req.path.decode("latin-1"),
                headers=StrHeaders(req.headers),
            )
            if authz.http.audit:
                decision = evaluate(authz, areq)
                allowed = decision.allowed
                for ref in decision.audit:
                    audit_log.info(json.dumps({
                        "audit_policy": ref.policy, "rule": ref.rule, "principal": conn.principal,
                        "method": areq.method, "path": areq.path, "allowed": allowed,
                    }))
            else:
                allowed = is_allowed(authz, areq)
                if cache is not None:
                    if len(cache) >= 4096:
                        cache.clear()
                    cache[key] = allowed
                    conn.authz_memo = (cache, req.path, req.method, req.host, allowed)
        if not allowed:
            now = _monotonic()
            stats.record_denied("inbound", source, cfg.workload, now + runtime.wall_offset)
            conn.respond(403, DENIED_BODY)
            stats.record("inbound", source, cfg.workload, 403, now - req.started, now + runtime.wall_offset)
            return
        headers = req.headers
        trace = b""
        if has_trace(headers):
            headers, trace_id, _ = propagate(headers, cfg.trace_sampling, _bits)
        else:
            trace, trace_id = new_trace(cfg.trace_sampling, _bits)

        def done(outcome: Outcome) -> None:
            now = _monotonic()
            seconds = now - req.started
            stats.record("inbound", source, cfg.workload, outcome.status or 500, seconds,
                         now + runtime.wall_offset)
            if cfg.access_log_rate and _rand() < cfg.access_log_rate:
                _log_access(cfg, "inbound", req, conn, outcome, seconds, trace_id, cluster.name)

        start_forward(conn, req, cluster, headers, NO_RETRY, None, None, None, Outcome(), done, trace)

    return handle


__all__ = ["DENIED_BODY", "make_inbound_handler", "make_outbound_handler"]
