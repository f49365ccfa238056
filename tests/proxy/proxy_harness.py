"""Test harness: a programmable backend, a small HTTP client, snapshot builders. Everything
runs on 127.0.0.1 with ports the OS picks."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import uvloop

from proxy_runtime.config import (
    Cluster,
    Endpoint,
    Identity,
    Inbound,
    InboundListener,
    Outbound,
    Route,
    Snapshot,
    VirtualHost,
    WeightedCluster,
    snapshot_to_json,
)
from proxy_runtime.dataplane.tls import peer_spiffe_ids


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run one test body on a fresh uvloop loop."""
    return uvloop.run(asyncio.wait_for(coro_fn(), 60))  # type: ignore[arg-type]


# --- backend ------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    principal: str | None


class _BackendProto(asyncio.Protocol):
    def __init__(self, backend: Backend) -> None:
        self.b = backend
        self.parser = httptools.HttpRequestParser(self)
        self.t: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = b""
        self.principal: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]
        self.b.connections += 1
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            ids = peer_spiffe_ids(sslobj.getpeercert())
            self.principal = ids[0] if ids else None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.t is not None
            self.t.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, n: bytes, v: bytes) -> None:
        k = n.decode().lower()
        self.headers[k] = f"{self.headers[k]},{v.decode()}" if k in self.headers else v.decode()

    def on_body(self, b: bytes) -> None:
        self.body += b

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        path = self.url.decode()
        seen = Seen(method, path, self.headers, self.body, self.principal)
        self.b.seen.append(seen)
        asyncio.get_running_loop().create_task(self.b.answer(self, seen))

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        assert self.t is not None
        hs = {"content-length": str(len(body)), "x-backend": self.b.name, **(headers or {})}
        head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs.items()) + "\r\n"
        self.t.write(head.encode() + body)


class Backend:
    """Answers by path: /status/N, /hang, /reset-mid-body, /chunked, /slow/MS, /big/N, /echo,
    /flaky/N (503 for the first N requests of that path), anything else: 200 JSON of the request."""

    def __init__(self, name: str = "b", ssl_ctx: ssl.SSLContext | None = None,
                 fail_status: int | None = None, hang: bool = False) -> None:
        self.name = name
        self.hang = hang
        self.fail_status = fail_status
        self.ssl_ctx = ssl_ctx
        self.seen: list[Seen] = []
        self.connections = 0
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.counts: dict[str, int] = {}

    async def start(self) -> Backend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _BackendProto(self), "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    def hits(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    async def answer(self, p: _BackendProto, seen: Seen) -> None:
        path = seen.path.split("?")[0]
        parts = path.strip("/").split("/")
        self.counts[path] = self.counts.get(path, 0) + 1
        if self.hang:
            return
        if self.fail_status is not None:
            p.send(self.fail_status, b"failing")
        elif parts[0] == "status":
            p.send(int(parts[1]), f"status {parts[1]}".encode())
        elif parts[0] == "hang":
            return
        elif parts[0] == "reset-mid-body":
            assert p.t is not None
            p.t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 10)
            await asyncio.sleep(0.05)
            p.t.abort()
        elif parts[0] == "reset-before-head":
            assert p.t is not None
            p.t.abort()
        elif parts[0] == "chunked":
            assert p.t is not None
            p.t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for i in range(3):
                piece = f"part{i};".encode()
                p.t.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await asyncio.sleep(0.01)
            p.t.write(b"0\r\n\r\n")
        elif parts[0] == "slow":
            await asyncio.sleep(int(parts[1]) / 1000)
            p.send(200, b"slow")
        elif parts[0] == "big":
            p.send(200, b"y" * int(parts[1]))
        elif parts[0] == "echo":
            p.send(200, seen.body)
        elif parts[0] == "flaky":
            p.send(503 if self.counts[path] <= int(parts[1]) else 200, b"flaky")
        else:
            body = json.dumps({"backend": self.name, "method": seen.method, "path": seen.path,
                               "headers": seen.headers, "principal": seen.principal}).encode()
            p.send(200, body, {"content-type": "application/json"})


# --- client -------------------------------------------------------------------------------


@dataclass
class Resp:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class _RespParser:
    def __init__(self) -> None:
        self.p = httptools.HttpResponseParser(self)
        self.resp: Resp | None = None
        self.done = False

    def on_message_begin(self) -> None:
        self.resp = Resp(0)
        self.done = False

    def on_header(self, n: bytes, v: bytes) -> None:
        assert self.resp is not None
        self.resp.headers[n.decode().lower()] = v.decode()

    def on_headers_complete(self) -> None:
        assert self.resp is not None
        self.resp.status = self.p.get_status_code()

    def on_body(self, b: bytes) -> None:
        assert self.resp is not None
        self.resp.body += b

    def on_message_complete(self) -> None:
        self.done = True


class Client:
    """One keep-alive connection; `request` sends one request and reads one response."""

    def __init__(self, port: int, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.ssl_ctx = ssl_ctx
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> Client:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.ssl_ctx)
        return self

    async def request(self, method: str = "GET", path: str = "/", host: str = "svc",
                      headers: dict[str, str] | None = None, body: bytes | None = None) -> Resp:
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        hs = {"host": host, **(headers or {})}
        if body is not None:
            hs["content-length"] = str(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs.items()) + "\r\n"
        self.writer.write(head.encode() + (body or b""))
        return await self.read_response(method == "HEAD")

    async def read_response(self, head_only: bool = False) -> Resp:
        assert self.reader is not None
        rp = _RespParser()
        while not rp.done:
            data = await self.reader.read(65536)
            if not data:
                if rp.resp is not None and rp.resp.status and "content-length" not in rp.resp.headers:
                    break
                raise ConnectionError("connection closed before the response ended")
            rp.p.feed_data(data)
            if rp.done and rp.resp is not None and 100 <= rp.resp.status < 200:
                rp.done = False  # an interim response: the real one follows
            if head_only and rp.resp is not None and rp.resp.status:
                break
        assert rp.resp is not None
        return rp.resp

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def get(port: int, path: str = "/", host: str = "svc", **kw: Any) -> Resp:
    c = Client(port, kw.pop("ssl_ctx", None))
    try:
        return await c.request(path=path, host=host, **kw)
    finally:
        await c.close()


async def raw(port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return out


# --- snapshots ----------------------------------------------------------------------------


def cluster(name: str, *addresses: str, **kw: Any) -> Cluster:
    return Cluster(name=name, endpoints=tuple(Endpoint(a) for a in addresses), **kw)


def route(*clusters: tuple[str, int] | str, **kw: Any) -> Route:
    wcs = tuple(WeightedCluster(c) if isinstance(c, str) else WeightedCluster(c[0], c[1]) for c in clusters)
    return Route(clusters=wcs, **kw)


def outbound_snapshot(routes: list[Route], clusters: list[Cluster], domains: tuple[str, ...] = ("svc",),
                      **kw: Any) -> dict[str, Any]:
    snap = Snapshot(
        outbound=Outbound(port=0, virtual_hosts=(VirtualHost("svc", domains, tuple(routes)),)),
        clusters=tuple(clusters),
        **kw,
    )
    return snapshot_to_json(snap)


def identity(ca_pem: str, cert: Any, spiffe_id: str) -> Identity:
    return Identity(spiffe_id=spiffe_id, certificate_pem=cert.cert_pem, private_key_pem=cert.key_pem,
                    trust_bundle_pem=ca_pem)


def inbound_listener(app: str, mode: str = "STRICT", protocol: str = "http", port: int = 0) -> InboundListener:
    return InboundListener(port=port, local_address=app, mtls_mode=mode, protocol=protocol,  # type: ignore[arg-type]
                           bind_address="127.0.0.1")


def inbound(service: str, namespace: str, listeners: list[InboundListener], policies: tuple[Any, ...] = (),
            default_deny: bool = False) -> Inbound:
    return Inbound(service=service, namespace=namespace, listeners=tuple(listeners), policies=policies,
                   default_deny=default_deny)


def client_tls(ca_pem: str, cert: Any | None) -> ssl.SSLContext:
    import os
    import tempfile

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca_pem)
    if cert is not None:
        with tempfile.TemporaryDirectory() as d:
            cp, kp = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
            Path(cp).write_text(cert.cert_pem)
            Path(kp).write_text(cert.key_pem)
            ctx.load_cert_chain(cp, kp)
    return ctx


def server_tls(ca_pem: str, cert: Any) -> ssl.SSLContext:
    from proxy_runtime.dataplane.tls import server_context

    return server_context(cert.cert_pem, cert.key_pem, ca_pem)
