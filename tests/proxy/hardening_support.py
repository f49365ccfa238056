"""Support for the hardening tests (#17): a backend that records every request head the
moment it arrives (not when the body ends) and can answer before the body, and async
context managers that always stop what they started (a failed assert leaks nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httptools

from proxy_runtime.dataplane.downstream import ServerLimits
from proxy_runtime.runtime import Ack, ProxyRuntime


class _HeadProto(asyncio.Protocol):
    def __init__(self, backend: HeadBackend) -> None:
        self.b = backend
        self.parser = httptools.HttpRequestParser(self)
        self.t: asyncio.Transport | None = None
        self.url = b""
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]
        self.b.connections.append(self)
        self.closed = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.b.received.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.t is not None
            self.t.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        path = self.url.decode("latin-1")
        self.b.heads.append(path)
        if path.startswith("/deny"):
            # answer before the body, as an authorization filter does, and keep the connection
            self.send(403, b"denied early")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        path = self.url.decode("latin-1")
        self.b.complete.append(path)
        if not path.startswith("/deny"):
            self.send(200, b"ok " + self.url + b" body=" + self.body)

    def send(self, status: int, body: bytes) -> None:
        assert self.t is not None
        self.t.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%b" % (status, len(body), body))


class HeadBackend:
    """heads: the path of every request head, in order, as soon as the head is parsed;
    complete: paths whose message (body included) ended. /deny* answers 403 at once (before
    the body); anything else answers 200 `ok <url> body=<body>` once the body is in."""

    def __init__(self) -> None:
        self.heads: list[str] = []
        self.complete: list[str] = []
        self.received: list[bytes] = []
        self.connections: list[_HeadProto] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@asynccontextmanager
async def head_backend() -> AsyncIterator[HeadBackend]:
    b = HeadBackend()
    b.server = await asyncio.get_running_loop().create_server(lambda: _HeadProto(b), "127.0.0.1", 0)
    b.port = b.server.sockets[0].getsockname()[1]
    try:
        yield b
    finally:
        b.server.close()
        for c in b.connections:
            if c.t is not None:
                c.t.abort()


@asynccontextmanager
async def running_proxy(snapshot: dict[str, Any], limits: ServerLimits | None = None) -> AsyncIterator[ProxyRuntime]:
    rt = ProxyRuntime(asyncio.get_running_loop(), limits=limits) if limits else ProxyRuntime(asyncio.get_running_loop())
    try:
        res = await rt.apply(snapshot)
        assert isinstance(res, Ack), res
        yield rt
    finally:
        await rt.aclose()


@asynccontextmanager
async def connection(port: int, ssl_ctx: Any = None) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx)
    try:
        yield reader, writer
    finally:
        writer.close()


async def read_until_close(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything until the peer closes; raises TimeoutError if it does not within `timeout`."""
    out = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionError:
                break
            if not data:
                break
            out += data
    return out


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


@asynccontextmanager
async def harness_backend(name: str = "b", ssl_ctx: Any = None) -> AsyncIterator[Any]:
    """proxy_harness.Backend, started and always stopped."""
    from proxy_harness import Backend

    b = await Backend(name, ssl_ctx=ssl_ctx).start()
    try:
        yield b
    finally:
        await b.stop()
