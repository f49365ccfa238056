"""Per-request logic of the HTTP listeners: outbound (route, fault, mirror, forward) and
inbound (authorize, forward to the local app). Each request reads the active config once at
its start, so a swap never changes a request in flight."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import TYPE_CHECKING

from proxy_runtime.config.authz import AuthzRequest, evaluate, is_allowed
from proxy_runtime.config.routing import choose_cluster, find_virtual_host, select_route
from proxy_runtime.dataplane.downstream import HttpDownstream, Request
from proxy_runtime.dataplane.forward import NO_RETRY, Outcome, RetrySettings, forward
from proxy_runtime.dataplane.headers import StrHeaders
from proxy_runtime.dataplane.tracing import propagate

if TYPE_CHECKING:
    from proxy_runtime.dataplane.active import ActiveConfig, RouteExtras
    from proxy_runtime.runtime import ProxyRuntime

access_log = logging.getLogger("meshcd.access")
audit_log = logging.getLogger("meshcd.audit")

_rand = random.random
_bits = random.getrandbits

DENIED_BODY = b"RBAC: access denied"


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


def make_outbound_handler(runtime: ProxyRuntime):  # type: ignore[no-untyped-def]
    loop = runtime.loop
    stats = runtime.stats

    async def handle(conn: HttpDownstream, req: Request) -> None:
        cfg = runtime.active
        assert cfg is not None
        outbound = cfg.compiled.outbound
        outcome = Outcome()
        if outbound is None:
            conn.respond(404, b"no outbound listener configured\n")
            return
        host = req.host.decode("latin-1")
        hv = StrHeaders(req.headers)
        sel = select_route(outbound, host, req.method.decode("latin-1"), req.url.decode("latin-1"), hv)
        if sel is None:
            if find_virtual_host(outbound, host) is None:
                body = f"meshcd: no virtual host for Host {host!r}\n".encode()
            else:
                body = f"meshcd: no route matched {req.method.decode('latin-1')} {req.path.decode('latin-1')} on {host!r}\n".encode()
            outcome.status = 404
            outcome.flags = "NR"
            conn.respond(404, body)
            _finish(cfg, "outbound", cfg.workload, "unknown", req, conn, outcome, "")
            return
        _, route = sel
        extras: RouteExtras = cfg.route_extras(route)
        fault = extras.fault
        if fault is not None:
            if fault.delay is not None and _rand() * 100.0 < fault.delay.percent:
                await asyncio.sleep(fault.delay.fixed_ms / 1000.0)
            if fault.abort is not None and _rand() * 100.0 < fault.abort.percent:
                outcome.status = fault.abort.http_status
                outcome.flags = "FI"
                conn.respond(fault.abort.http_status, b"fault filter abort")
                _finish(cfg, "outbound", cfg.workload, route.clusters[0], req, conn, outcome, "")
                return
        name = route.clusters[0] if len(route.clusters) == 1 else choose_cluster(route, _rand())
        cluster = cfg.clusters[name]
        headers = req.headers
        if extras.request_edit is not None:
            headers = extras.request_edit(headers)
        headers, trace_id, _ = propagate(headers, cfg.trace_sampling, _bits)
        hash_key = cfg.hash_key_of(cluster, req, conn)
        try:
            await forward(conn, req, cluster, headers, retry=extras.retry, timeout=extras.timeout,
                          response_edit=extras.response_edit, hash_key=hash_key, outcome=outcome)
        finally:
            _finish(cfg, "outbound", cfg.workload, name, req, conn, outcome, trace_id)
        mirror = extras.mirror
        if mirror is not None and req.body.replayable and req.body.complete and (
            _rand() * 100.0 < mirror.percent
        ):
            runtime.mirror(cfg, mirror.cluster, req, headers)

    def _finish(cfg: ActiveConfig, direction: str, src: str, dst: str, req: Request,
                conn: HttpDownstream, outcome: Outcome, trace_id: bytes | str) -> None:
        now = loop.time()
        seconds = now - req.started
        stats.record(direction, src, dst, outcome.status or 500, seconds, now + runtime.wall_offset)
        if cfg.access_log_rate and _rand() < cfg.access_log_rate:
            _log_access(cfg, direction, req, conn, outcome, seconds,
                        trace_id if isinstance(trace_id, bytes) else b"", dst)

    return handle


def make_inbound_handler(runtime: ProxyRuntime, port_key: int):  # type: ignore[no-untyped-def]
    loop = runtime.loop
    stats = runtime.stats

    async def handle(conn: HttpDownstream, req: Request) -> None:
        cfg = runtime.active
        assert cfg is not None
        inbound = cfg.inbound_by_port.get(port_key)
        outcome = Outcome()
        source = conn.principal or "unknown"
        if inbound is None:
            conn.respond(503, b"meshcd: listener is being removed\n", keep_alive=False)
            return
        listener, cluster = inbound
        authz = cfg.compiled.inbound.authz  # type: ignore[union-attr]
        areq = AuthzRequest(
            principal=conn.principal,
            source_ip=conn.peer_ip,
            destination_port=listener.service_port,
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
        if not allowed:
            now = loop.time()
            stats.record_denied("inbound", source, cfg.workload, now + runtime.wall_offset)
            outcome.status = 403
            outcome.flags = "RBAC"
            conn.respond(403, DENIED_BODY)
            stats.record("inbound", source, cfg.workload, 403, now - req.started, now + runtime.wall_offset)
            return
        headers, trace_id, _ = propagate(req.headers, cfg.trace_sampling, _bits)
        try:
            await forward(conn, req, cluster, headers, retry=NO_RETRY, outcome=outcome)
        finally:
            now = loop.time()
            seconds = now - req.started
            stats.record("inbound", source, cfg.workload, outcome.status or 500, seconds,
                         now + runtime.wall_offset)
            if cfg.access_log_rate and _rand() < cfg.access_log_rate:
                _log_access(cfg, "inbound", req, conn, outcome, seconds, trace_id, cluster.name)

    return handle


__all__ = ["DENIED_BODY", "RetrySettings", "make_inbound_handler", "make_outbound_handler"]
