"""The admin API: a tiny HTTP/1.1 server on its own port (loopback by default), written on
asyncio + httptools because a proxy host runs without a web framework.

GET /healthz, /ready, /config_dump, /metrics, /stats/window[?seconds=N]."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httptools

from proxy_runtime.dataplane.http1 import simple_response

# path -> (query) -> (status, content type, body)
Route = Callable[[dict[str, list[str]]], tuple[int, bytes, bytes]]


def json_body(obj: Any, status: int = 200) -> tuple[int, bytes, bytes]:
    return status, b"application/json", json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"


class _AdminProtocol(asyncio.Protocol):
    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(simple_response(400, b"bad request\n", close=True))
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        assert self.transport is not None
        parsed = httptools.parse_url(self.url)
        path = parsed.path.decode(errors="replace")
        query = parse_qs(parsed.query.decode(errors="replace")) if parsed.query else {}
        method = self.parser.get_method()
        route = self.routes.get(path)
        if method not in (b"GET", b"HEAD"):
            status, ctype, body = 405, b"text/plain", b"method not allowed\n"
        elif route is None:
            status, ctype, body = 404, b"text/plain", b"not found: " + path.encode() + b"\n"
        else:
            try:
                status, ctype, body = route(query)
            except Exception as exc:  # an admin page must not take the proxy down
                status, ctype, body = 500, b"text/plain", f"error: {exc}\n".encode()
        keep = self.parser.should_keep_alive()
        self.transport.write(simple_response(status, body if method == b"GET" else b"",
                                             close=not keep, content_type=ctype))
        if not keep:
            self.transport.close()


async def start_admin(
    routes: dict[str, Route], host: str = "127.0.0.1", port: int = 15000
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    sock = _bind_numeric(host, port)
    if sock is None:  # a host name: let the loop resolve it
        return await loop.create_server(lambda: _AdminProtocol(routes), host, port, reuse_address=True)
    return await loop.create_server(lambda: _AdminProtocol(routes), sock=sock)


def _bind_numeric(host: str, port: int) -> socket.socket | None:
    """A listening socket for a numeric address, bound here: the loop would resolve it with
    getaddrinfo in libuv's thread pool, and those four threads (and their malloc arenas)
    would stay for the life of the proxy."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(100)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock
    return None
