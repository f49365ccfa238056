"""The proxy process: the active config, the listeners, applying a new config, drain.

`apply()` is the one entry point for new configs (static file, SIGHUP, the agent of #5):
parse + compile everything first, build the run-time objects, bind only listeners whose port
is new, then swap one reference. Any failure before the swap leaves the old config serving
and comes back as a Nack with the error text."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy_runtime.config import SnapshotError, parse_snapshot, snapshot_to_json
from proxy_runtime.config.authz import AuthzRequest, is_allowed
from proxy_runtime.config.compile import CompiledConfig, compile_snapshot
from proxy_runtime.config.files import dump_snapshot_file, loads_snapshot
from proxy_runtime.dataplane.active import ActiveConfig
from proxy_runtime.dataplane.clusters import PoolRegistry
from proxy_runtime.dataplane.downstream import (
    HttpDownstream,
    HttpDownstreamTls,
    HttpServerState,
    Request,
    ServerLimits,
)
from proxy_runtime.dataplane.forward import Outcome, forward
from proxy_runtime.dataplane.handlers import make_inbound_handler, make_outbound_handler
from proxy_runtime.dataplane.tcp_relay import RelaySide, relay_to
from proxy_runtime.dataplane.tls import NOT_AN_SVID, downstream_sni, svid_spiffe_id
from proxy_runtime.metrics import Stats
from proxy_runtime.protocol.canonical import compute_version

log = logging.getLogger("meshcd.proxy")

SNAPSHOT_FILE = "snapshot.json"


@dataclass(frozen=True)
class Ack:
    version: str


@dataclass(frozen=True)
class Nack:
    error: str
    version: str | None = None  # the version that was refused, if it could be computed


ListenerKey = tuple[str, str, int]  # (role, bind address, configured port)


class Listener:
    """A bound listening socket with its accept machinery."""

    def __init__(self, key: ListenerKey, sock: socket.socket) -> None:
        self.key = key
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.server: asyncio.AbstractServer | None = None
        self.accept_task: asyncio.Task[None] | None = None
        self.http_state: HttpServerState | None = None
        self.tcp_conns: set[RelaySide] = set()

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.accept_task is not None:
            self.accept_task.cancel()
        with contextlib.suppress(OSError):
            self.sock.close()


def _bind(bind: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class ProxyRuntime:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        state_dir: str | Path | None = None,
        limits: ServerLimits | None = None,
        drain_seconds: float = 10.0,
    ) -> None:
        self.loop = loop or asyncio.get_event_loop()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.limits = limits or ServerLimits()
        self.drain_seconds = drain_seconds
        self.stats = Stats()
        self.registry = PoolRegistry(self.loop, self.stats)
        self.active: ActiveConfig | None = None
        self.listeners: dict[ListenerKey, Listener] = {}
        # request timing uses time.monotonic (uvloop's loop.time() ticks in milliseconds);
        # adding this offset gives wall-clock seconds for the stats window
        self.wall_offset = time.time() - time.monotonic()
        self.draining = False
        self.last_nack: str | None = None
        self._apply_lock = asyncio.Lock()
        self._tls_cache: dict[tuple[str, str, str], Any] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # --- applying ---------------------------------------------------------------------------
    async def apply(self, snapshot: str | bytes | dict[str, Any]) -> Ack | Nack:
        async with self._apply_lock:
            result = self._apply(snapshot)
            if isinstance(result, Nack):
                self.stats.nacks += 1
                self.last_nack = result.error
                log.warning("config NACK: %s", result.error)
            return result

    def _apply(self, snapshot: str | bytes | dict[str, Any]) -> Ack | Nack:
        if self.draining:
            return Nack("proxy is draining")
        version: str | None = None
        try:
            if isinstance(snapshot, dict):
                with contextlib.suppress(ValueError, TypeError):
                    version = compute_version(snapshot)
                model = parse_snapshot(snapshot)
            else:
                model = loads_snapshot(snapshot)
            compiled = compile_snapshot(model)
            version = compiled.version
            new = ActiveConfig(compiled, self.registry, self.stats, self._tls_cache)
        except (SnapshotError, ValueError) as exc:
            return Nack(str(exc), version)
        wanted = self._wanted_listeners(compiled)
        fresh: dict[ListenerKey, Listener] = {}
        # a port that stays but changes role (http <-> tcp) is handed over: close the old
        # listener first so the new one can bind it
        handover = [k for k in self.listeners if k not in wanted and k[2] != 0
                    and any((w[1], w[2]) == (k[1], k[2]) for w in wanted if w not in self.listeners)]
        for key in handover:
            self.listeners[key].stop_accepting()
        try:
            for key in wanted:
                if key not in self.listeners:
                    fresh[key] = Listener(key, _bind(key[1], key[2]))
        except OSError as exc:
            for li in fresh.values():
                li.stop_accepting()
            return Nack(f"cannot bind {key[1]}:{key[2]} ({wanted[key]}): {exc.strerror or exc}", version)
        # --- the swap: nothing below may fail on the config's account
        self.active = new
        self.registry.commit()
        for key, li in fresh.items():
            self._serve(li)
            self.listeners[key] = li
        for key in list(self.listeners):
            if key not in wanted:
                old = self.listeners.pop(key)
                old.stop_accepting()
                if old.http_state is not None:
                    old.http_state.drain()
                    old.http_state.stop()
        self.stats.config_version = compiled.version
        self.stats.config_revision = compiled.revision or ""
        self.stats.config_applied_at = new.applied_at
        self.last_nack = None
        self._persist(compiled)
        log.info("config %s applied (revision %s)", compiled.version[:12], compiled.revision)
        return Ack(compiled.version)

    def _wanted_listeners(self, compiled: CompiledConfig) -> dict[ListenerKey, str]:
        out: dict[ListenerKey, str] = {}
        if compiled.inbound is not None:
            for i, cl in enumerate(compiled.inbound.listeners):
                li = cl.listener
                role = "inbound-tcp" if li.protocol == "tcp" else "inbound-http"
                out[(role, li.bind_address, li.port)] = f"inbound.listeners[{i}]"
        if compiled.outbound is not None:
            ob = compiled.outbound.outbound
            out[("outbound", ob.bind_address, ob.port)] = "outbound"
        for i, t in enumerate(compiled.tcp):
            out[("tcp-out", t.bind_address, t.port)] = f"tcp[{i}]"
        return out

    def _persist(self, compiled: CompiledConfig) -> None:
        if self.state_dir is None:
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            dump_snapshot_file(compiled.snapshot, self.state_dir / SNAPSHOT_FILE)
        except OSError as exc:  # serving matters more than persisting
            log.error("cannot persist the snapshot in %s: %s", self.state_dir, exc)

    async def load_persisted(self) -> Ack | Nack | None:
        """Apply the last good snapshot from the state dir, if there is one."""
        if self.state_dir is None:
            return None
        path = self.state_dir / SNAPSHOT_FILE
        if not path.exists():
            return None
        return await self.apply(path.read_bytes())

    def port_of(self, role: str, configured_port: int) -> int | None:
        """The actual port of a listener (differs from the configured one for port 0)."""
        for (r, _, port), li in self.listeners.items():
            if r == role and port == configured_port:
                return int(li.port)
        return None

    # --- serving ---------------------------------------------------------------------------
    def _serve(self, li: Listener) -> None:
        role, _, port = li.key
        loop = self.loop
        if role == "outbound":
            li.http_state = HttpServerState(loop, make_outbound_handler(self), self.limits)
            state = li.http_state
            task = loop.create_task(self._start_server(li, lambda: HttpDownstream(state)))
            self._keep(task)
        elif role == "inbound-http":
            li.http_state = HttpServerState(loop, make_inbound_handler(self, port), self.limits)
            li.accept_task = loop.create_task(self._accept_inbound(li))
        elif role == "inbound-tcp":
            li.accept_task = loop.create_task(self._accept_inbound(li))
        else:
            task = loop.create_task(self._start_server(li, lambda: self._tcp_outbound(li)))
            self._keep(task)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _start_server(self, li: Listener, factory: Any) -> None:
        li.server = await self.loop.create_server(factory, sock=li.sock, backlog=1024)

    async def _accept_inbound(self, li: Listener) -> None:
        """Our own accept loop: the mTLS mode and the TLS context are read from the active
        config per connection, so a swap changes them without re-binding."""
        loop = self.loop
        while True:
            try:
                csock, _ = await loop.sock_accept(li.sock)
            except (OSError, asyncio.CancelledError):
                return
            self._keep(loop.create_task(self._serve_inbound(li, csock)))

    async def _serve_inbound(self, li: Listener, csock: socket.socket) -> None:
        loop = self.loop
        cfg = self.active
        entry = cfg.inbound_by_port.get(li.key[2]) if cfg is not None else None
        if cfg is None or entry is None:
            csock.close()
            return
        mode = entry[0].listener.mtls_mode
        csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        use_tls = mode == "STRICT"
        if mode == "PERMISSIVE":
            # sniff without consuming: a TLS handshake record starts with 0x16
            ready = loop.create_future()
            def readable() -> None:
                if not ready.done():
                    ready.set_result(None)

            loop.add_reader(csock.fileno(), readable)
            try:
                await asyncio.wait_for(ready, self.limits.header_timeout)
                first = csock.recv(1, socket.MSG_PEEK)
            except (TimeoutError, OSError):
                csock.close()
                return
            finally:
                loop.remove_reader(csock.fileno())
            if not first:
                csock.close()
                return
            use_tls = first == b"\x16"
        ctx = cfg.server_tls if use_tls else None
        if use_tls and ctx is None:
            csock.close()
            return
        factory: Any
        if li.key[0] == "inbound-http":
            state = li.http_state
            assert state is not None
            cls = HttpDownstreamTls if ctx is not None else HttpDownstream
            factory = lambda: cls(state)  # noqa: E731
        else:
            factory = lambda: _InboundTcp(self, li)  # noqa: E731
        try:
            await loop.connect_accepted_socket(factory, csock, ssl=ctx,
                                               ssl_handshake_timeout=self.limits.header_timeout if ctx else None)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            # plaintext on STRICT, no client cert, an untrusted or expired cert
            log.info("inbound %d: TLS handshake refused: %s", li.port, exc)
            with contextlib.suppress(OSError):
                csock.close()

    def _tcp_outbound(self, li: Listener) -> RelaySide:
        side = RelaySide(on_close=lambda: li.tcp_conns.discard(side))
        li.tcp_conns.add(side)
        cfg = self.active
        # the cluster is read from the config per connection: changing it needs no re-bind
        name = next((t.cluster for t in cfg.compiled.tcp
                     if (t.bind_address, t.port) == li.key[1:]), "") if cfg is not None else ""
        self._keep(self.loop.create_task(self._relay_cluster(side, cfg, name)))
        return side

    async def _relay_cluster(self, side: RelaySide, cfg: ActiveConfig | None, cluster_name: str) -> None:
        await asyncio.sleep(0)  # let connection_made run
        cluster = cfg.clusters.get(cluster_name) if cfg is not None else None
        if cluster is None:
            side.abort()
            return
        loop = self.loop
        ep = cluster.balancer.pick(loop.time(), None)
        pool = cluster.pool(ep)

        async def connect(factory: Any) -> tuple[Any, RelaySide]:
            t, p = await asyncio.wait_for(loop.create_connection(
                factory, ep.address, ep.port, ssl=pool.ssl_context,
                server_hostname=pool.server_hostname if pool.ssl_context else None),
                pool.connect_timeout)
            if pool.ssl_context is not None:
                got = svid_spiffe_id(t.get_extra_info("ssl_object").getpeercert())
                if got is None or (pool.expected_peer_ids and got not in pool.expected_peer_ids):
                    t.abort()
                    raise OSError(NOT_AN_SVID if got is None else f"peer SPIFFE ID {got} is not {pool.expected_peer_ids}")
            self.stats.connection_opened(cluster_name)
            return t, p

        if not await relay_to(side, connect):
            self.stats.connect_failed(cluster_name, time.time())

    def mirror(self, cfg: ActiveConfig, cluster_name: str, req: Request, headers: list[tuple[bytes, bytes]]) -> None:
        """Fire-and-forget copy of a finished request; its answer is read and dropped."""
        cluster = cfg.clusters.get(cluster_name)
        if cluster is None:
            return
        host = req.host + b"-shadow"
        shadow_headers = [(n, host if n == b"host" else v) for n, v in headers]
        self._keep(self.loop.create_task(_shadow(self.loop, cluster, req, shadow_headers)))

    # --- drain ---------------------------------------------------------------------------
    def in_flight(self) -> int:
        n = 0
        for li in self.listeners.values():
            if li.http_state is not None:
                n += li.http_state.in_flight
            n += len(li.tcp_conns)
        return n

    async def drain(self, deadline_seconds: float | None = None) -> bool:
        """Stop accepting, let in-flight requests finish (keep-alive connections close after
        their current response) up to the deadline. True if everything finished in time."""
        self.draining = True
        limit = self.drain_seconds if deadline_seconds is None else deadline_seconds
        for li in self.listeners.values():
            li.stop_accepting()
            if li.http_state is not None:
                li.http_state.drain()
        end = self.loop.time() + limit
        while self.in_flight() and self.loop.time() < end:
            await asyncio.sleep(0.05)
        clean = self.in_flight() == 0
        self.close()
        return clean

    async def aclose(self) -> None:
        """close(), then wait for the background tasks (mirrors, relays) to end."""
        self.close()
        tasks = [t for t in self._background if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    def close(self) -> None:
        for li in self.listeners.values():
            li.stop_accepting()
            if li.http_state is not None:
                li.http_state.stop()
                for conn in list(li.http_state.connections):
                    conn.abort()
            for side in list(li.tcp_conns):
                side.abort()
        self.listeners.clear()
        self.registry.close()

    # --- admin views ----------------------------------------------------------------------
    def config_dump(self) -> dict[str, Any]:
        cfg = self.active
        if cfg is None:
            return {"version": None, "revision": None, "applied_at": None, "snapshot": None,
                    "last_nack": self.last_nack}
        doc = snapshot_to_json(cfg.compiled.snapshot)
        ident = doc.get("identity")
        if isinstance(ident, dict) and "privateKeyPem" in ident:
            ident["privateKeyPem"] = "[redacted]"
        return {
            "version": cfg.version,
            "revision": cfg.revision,
            "applied_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cfg.applied_at)),
            "listeners": {f"{k[0]} {k[1]}:{k[2]}": li.port for k, li in self.listeners.items()},
            "last_nack": self.last_nack,
            "snapshot": doc,
        }


class _ShadowSink:
    """Stands in for the client of a mirrored request: swallows the response."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.write_paused = False
        self.feeder: Any = None
        self.closing = False
        self.current: Any = None
        self.response_started = False

    def write(self, data: bytes) -> None:
        pass

    def respond(self, *a: Any, **k: Any) -> None:
        pass

    def finish_response(self, keep_alive: bool) -> None:
        pass

    def response_keep_alive(self, req: Any) -> bool:
        return True

    def abort(self) -> None:
        pass

    def pause_reading_for_body(self) -> None:
        pass

    def resume_reading_for_body(self) -> None:
        pass


async def _shadow(loop: asyncio.AbstractEventLoop, cluster: Any, req: Request,
                  headers: list[tuple[bytes, bytes]]) -> None:
    from proxy_runtime.dataplane.downstream import RequestBody

    sink = _ShadowSink(loop)
    copy = Request()
    copy.method, copy.url, copy.path, copy.host = req.method, req.url, req.path, req.host
    copy.version = req.version
    body = RequestBody(sink, req.body.chunked, req.body.content_length, 1 << 30)  # type: ignore[arg-type]
    for piece in req.body.replay:
        body.feed(piece)
    body.finish()
    copy.body = body
    copy.started = time.monotonic()
    with contextlib.suppress(Exception):
        await forward(sink, copy, cluster, headers, outcome=Outcome())


class _InboundTcp(RelaySide):
    """An inbound TCP connection: L4 authorization on connect, then relay to the local app."""

    def __init__(self, runtime: ProxyRuntime, li: Listener) -> None:
        super().__init__(on_close=lambda: li.tcp_conns.discard(self))
        self.runtime = runtime
        self.li = li
        li.tcp_conns.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        rt = self.runtime
        cfg = rt.active
        entry = cfg.inbound_by_port.get(self.li.key[2]) if cfg is not None else None
        if cfg is None or entry is None or cfg.compiled.inbound is None:
            transport.abort()  # type: ignore[attr-defined]
            return
        listener, cluster = entry
        sslobj = transport.get_extra_info("ssl_object")
        principal = svid_spiffe_id(sslobj.getpeercert()) if sslobj is not None else None
        peer = transport.get_extra_info("peername") or ("", 0)
        if sslobj is not None and principal is None:
            log.info("inbound tcp %s refused: %s", peer[0], NOT_AN_SVID)
            transport.abort()  # type: ignore[attr-defined]
            return
        local = transport.get_extra_info("sockname") or ("", 0)
        areq = AuthzRequest(principal=principal, source_ip=peer[0], destination_ip=local[0] or None,
                            destination_port=listener.service_port, sni=downstream_sni(sslobj),
                            is_tcp=True)
        source = principal or "unknown"
        now = time.time()
        if not is_allowed(cfg.compiled.inbound.authz, areq):
            rt.stats.record_denied("inbound", source, cfg.workload, now)
            transport.abort()  # type: ignore[attr-defined]
            return
        ep = cluster.endpoints[0]
        loop = rt.loop

        async def connect(factory: Any) -> tuple[Any, RelaySide]:
            result: tuple[Any, RelaySide] = await asyncio.wait_for(
                loop.create_connection(factory, ep.address, ep.port), 5.0)
            return result

        rt._keep(loop.create_task(relay_to(self, connect)))

