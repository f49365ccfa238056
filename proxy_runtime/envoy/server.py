"""The agent's gRPC server for its Envoy, on a Unix socket: ADS (aggregated CDS, EDS, LDS, RDS,
state of the world), SDS (the SVID and the trust bundle; the key lives only in this process's
memory and on this socket) and the metrics service (Envoy's stats sink, flushed every second,
for the per-second stats window). The decisions are in `xds.AdsStream` and `stats_sink`;
this is the shell that converts protobuf and keeps the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401  (registers the types for Any)
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2, json_format

from proxy_runtime.envoy.metrics_proto import METHOD, StreamMetricsMessage, StreamMetricsResponse
from proxy_runtime.envoy.stats_sink import Histogram, Sample, add_to_window, read_flush
from proxy_runtime.envoy.translate import (
    BUNDLE_SECRET,
    CLA,
    CLUSTER,
    SVID_SECRET,
    EnvoyResources,
)
from proxy_runtime.envoy.xds import SHORT, Acked, AdsStream, Nacked, Outcome, Push, Request, Target
from proxy_runtime.metrics import Stats

log = logging.getLogger("meshcd.envoy")

_COUNTER, _HISTOGRAM = 0, 4  # io.prometheus.client.MetricType
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


@dataclass(frozen=True)
class TlsMaterial:
    """The SVID (chain + key) and the trust bundle, PEM. Held in memory only."""

    chain_pem: str
    key_pem: str
    bundle_pem: str

    @property
    def version(self) -> str:
        return hashlib.sha256((self.chain_pem + self.bundle_pem).encode()).hexdigest()[:16]


def _target(res: EnvoyResources, running: EnvoyResources | None = None) -> Target:
    """`res` as a push target; when it drops clusters `running` has, with the interim
    clusters (make before break, xds.Target)."""
    interim = None
    if running is not None and running.version != res.version:
        keep = {c["name"] for c in res.clusters}
        dropped = [c for c in running.clusters if c["name"] not in keep]
        if dropped:
            names = {c["name"] for c in dropped}
            interim = {CLUSTER: (*res.clusters, *dropped), CLA: (
                *res.endpoints, *(e for e in running.endpoints if e["cluster_name"] in names))}
    return Target(res.version, res.by_type(), interim)


def _to_any(resource: dict[str, Any]) -> any_pb2.Any:
    return json_format.ParseDict(resource, any_pb2.Any())


class _AdsConn:
    def __init__(self, target: Target | None) -> None:
        self.state = AdsStream(target)
        self.queue: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = asyncio.Queue()


class EnvoyControl:
    """What the agent serves its Envoy, and Envoy's answers. `push(resources)` returns once
    Envoy ACKed every type of that version (Acked) or rejected one (Nacked); Envoy then goes
    back to the last good version."""

    def __init__(self, stats: Stats, *, now: Callable[[], float]) -> None:
        self.stats = stats
        self.now = now
        self.good: EnvoyResources | None = None
        self.pending: EnvoyResources | None = None
        self.tls: TlsMaterial | None = None
        self._conns: set[_AdsConn] = set()
        self._sds: set[asyncio.Queue[None]] = set()
        self._waiters: dict[str, list[asyncio.Future[Outcome]]] = {}
        self._any_cache: dict[str, dict[str, list[any_pb2.Any]]] = {}
        self.connected = asyncio.Event()
        # Envoy holds the last good version whole (set on its ACKs, cleared when it goes away)
        self.synced = asyncio.Event()
        self.last_nack: str | None = None

    # -- the agent's side ----------------------------------------------------------------

    def current(self) -> EnvoyResources | None:
        return self.pending or self.good

    def set_good(self, res: EnvoyResources) -> None:
        """Serve `res` as the last good config (at start: static stability) without waiting."""
        self.good, self.pending = res, None
        self._retarget(res)

    async def push(self, res: EnvoyResources, timeout: float) -> Outcome:
        if self.good is not None and res.version == self.good.version and self.pending is None:
            return Acked(res.version)
        self.pending = res
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(res.version, []).append(fut)
        self._retarget(res)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            self._resolve(Nacked(res.version, "", f"Envoy did not acknowledge within {timeout:g} s"))
            return fut.result()

    def set_tls(self, tls: TlsMaterial) -> None:
        if self.tls != tls:
            self.tls = tls
            for q in self._sds:
                q.put_nowait(None)

    # -- outcomes -------------------------------------------------------------------------

    def _retarget(self, res: EnvoyResources) -> None:
        target = _target(res, self.good)
        for conn in list(self._conns):
            pushes, outcomes = conn.state.retarget(target)
            self._send(conn, pushes)
            for o in outcomes:
                self._resolve(o)

    def _resolve(self, outcome: Outcome) -> None:
        if (isinstance(outcome, Acked) and self.good is not None
                and outcome.version == self.good.version):
            self.synced.set()
        pending = self.pending
        if pending is None or outcome.version != pending.version:
            return
        if isinstance(outcome, Acked):
            self.good, self.pending = pending, None
            self.synced.set()
            log.info("Envoy acked %s", outcome.version[:12])
        else:
            self.pending = None
            self.last_nack = outcome.error
            log.warning("Envoy rejected %s (%s): %s", outcome.version[:12],
                        SHORT.get(outcome.type_url, "-"), outcome.error)
            if self.good is not None:
                self._retarget(self.good)
        for fut in self._waiters.pop(outcome.version, []):
            if not fut.done():
                fut.set_result(outcome)

    def _send(self, conn: _AdsConn, pushes: list[Push]) -> None:
        for p in pushes:
            by_type = self._any_cache.get(p.version)
            if by_type is None:
                if len(self._any_cache) > 4:
                    self._any_cache.clear()
                by_type = self._any_cache[p.version] = {}
            anys = by_type.get(p.type_url)
            if anys is None:
                anys = by_type[p.type_url] = [_to_any(dict(r)) for r in p.resources]
            conn.queue.put_nowait(discovery_pb2.DiscoveryResponse(
                version_info=p.version, type_url=p.type_url, nonce=p.nonce, resources=anys))

    # -- ADS ------------------------------------------------------------------------------

    async def ads(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]
                  ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        current = self.current()
        conn = _AdsConn(_target(current, self.good) if current is not None else None)
        self._conns.add(conn)
        self.connected.set()

        async def read() -> None:
            try:
                async for req in requests:
                    error = req.error_detail.message if req.HasField("error_detail") else None
                    log.debug("ADS request %s version=%s nonce=%s names=%s error=%s",
                              SHORT.get(req.type_url, req.type_url), req.version_info[:12],
                              req.response_nonce, list(req.resource_names)[:5], error)
                    pushes, outcomes = conn.state.on_request(Request(
                        req.type_url, req.version_info, req.response_nonce,
                        tuple(req.resource_names), error))
                    self._send(conn, pushes)
                    for o in outcomes:
                        self._resolve(o)
            finally:
                conn.queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                msg = await conn.queue.get()
                if msg is None:
                    break
                yield msg
        finally:
            reader.cancel()
            self._conns.discard(conn)
            if not self._conns:
                self.connected.clear()
                self.synced.clear()

    # -- SDS ------------------------------------------------------------------------------

    def _secrets(self, names: list[str]) -> list[any_pb2.Any]:
        tls = self.tls
        out: list[any_pb2.Any] = []
        if tls is None:
            return out
        for name in names:
            if name == SVID_SECRET:
                secret = secret_pb2.Secret(name=name, tls_certificate={
                    "certificate_chain": {"inline_bytes": tls.chain_pem.encode()},
                    "private_key": {"inline_bytes": tls.key_pem.encode()}})
            elif name == BUNDLE_SECRET:
                secret = secret_pb2.Secret(name=name, validation_context={
                    "trusted_ca": {"inline_bytes": tls.bundle_pem.encode()}})
            else:
                continue
            a = any_pb2.Any()
            a.Pack(secret)
            out.append(a)
        return out

    async def sds(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]
                  ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        wake: asyncio.Queue[None] = asyncio.Queue()
        self._sds.add(wake)
        names: list[str] = []
        nonce = 0
        sent: str | None = None

        async def read() -> None:
            nonlocal names
            try:
                async for req in requests:
                    if req.HasField("error_detail"):
                        log.error("Envoy rejected the SDS secrets: %s", req.error_detail.message)
                    if list(req.resource_names) != names or not req.response_nonce:
                        names = list(req.resource_names)
                        wake.put_nowait(None)
            finally:
                wake.put_nowait(None)
                self._sds.discard(wake)

        reader = asyncio.create_task(read())
        try:
            while True:
                await wake.get()
                if reader.done():
                    break
                tls = self.tls
                if tls is None or not names or (sent == tls.version + ",".join(names)):
                    continue
                nonce += 1
                sent = tls.version + ",".join(names)
                yield discovery_pb2.DiscoveryResponse(
                    version_info=tls.version, type_url=SECRET_TYPE, nonce=str(nonce),
                    resources=self._secrets(names))
        finally:
            reader.cancel()
            self._sds.discard(wake)

    # -- stats (metrics service) -------------------------------------------------------------

    async def metrics(self, requests: AsyncIterator[Any]) -> None:
        """Envoy's stats flushes (every second) into the per-second window."""
        async for msg in requests:
            samples: dict[str, Sample] = {}
            for fam in msg.envoy_metrics:
                for m in fam.metric:
                    if fam.type == _HISTOGRAM:
                        h = m.histogram
                        samples[fam.name] = Histogram(h.sample_count, h.sample_sum, tuple(
                            (b.upper_bound, b.cumulative_count) for b in h.bucket))
                    elif fam.type == _COUNTER:
                        samples[fam.name] = m.counter.value
            add_to_window(self.stats.window, self.now(), read_flush(samples))


class _Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, control: EnvoyControl) -> None:
        self.control = control

    async def StreamAggregatedResources(self, request_iterator: Any, context: Any) -> Any:
        async for response in self.control.ads(request_iterator):
            yield response


class _Sds(sds_pb2_grpc.SecretDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, control: EnvoyControl) -> None:
        self.control = control

    async def StreamSecrets(self, request_iterator: Any, context: Any) -> Any:
        async for response in self.control.sds(request_iterator):
            yield response


MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux (104 on macOS), NUL included


def socket_path_for(run_dir: Path, name: str = "xds.sock") -> Path:
    """`run_dir/agent/<name>`, or, when that path is too long for a Unix socket, a short one
    derived from it (`<tmp>/meshcd-<hash>/<name>`: the same run dir gets the same path, so an
    Envoy left running finds a restarted agent)."""
    path = run_dir.resolve() / "agent" / name
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(run_dir.resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"meshcd-{digest}" / name


def private_socket_dir(path: Path) -> Path:
    """Create `path` as a 0700 directory of ours (or tighten one that is ours). A directory
    someone else owns is refused: they could reach (or replace) the socket."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{path}: not a directory of this user; the xDS socket needs a "
                              "private directory")
    os.chmod(path, 0o700)
    return path


async def start_server(control: EnvoyControl, socket_path: Path) -> grpc.aio.Server:
    """Serve ADS, SDS and the metrics service on `socket_path` (its directory made 0700, the
    socket 0600)."""
    private_socket_dir(socket_path.parent)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 * 1024 * 1024),
                                      ("grpc.max_send_message_length", 64 * 1024 * 1024)])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Ads(control), server)
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(_Sds(control), server)
    async def stream_metrics(request_iterator: Any, context: Any) -> Any:
        await control.metrics(request_iterator)
        return StreamMetricsResponse()

    service, _, method = METHOD.strip("/").partition("/")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {
        method: grpc.stream_unary_rpc_method_handler(
            stream_metrics, request_deserializer=StreamMetricsMessage.FromString,
            response_serializer=lambda r: r.SerializeToString())}),))
    old = os.umask(0o177)  # the socket is born 0600
    try:
        server.add_insecure_port(f"unix:{socket_path}")
        await server.start()
    finally:
        os.umask(old)
    os.chmod(socket_path, 0o600)
    return server
