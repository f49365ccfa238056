"""uvicorn behind a `GuardedListener`: the listener accepts (caps, back-off), uvicorn speaks
HTTP on what it admits, and `TrackRequests` tells the listener when a request is in flight so
that a connection that does not send its request head in time is closed (slowloris)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from typing import Any

import uvicorn

from reconciler.net.listener import GuardedListener, Peer

log = logging.getLogger("meshcd.net")

Scope = dict[str, Any]


class TrackRequests:
    """ASGI middleware: marks a request in flight on its connection (by client address)."""

    def __init__(self, app: Any, listener: GuardedListener) -> None:
        self.app = app
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer: Peer | None = (str(client[0]), int(client[1])) if client else None
        self.listener.request_started(peer)
        try:
            await self.app(scope, receive, send)
        finally:
            self.listener.request_ended(peer)


def uvicorn_handler(server: uvicorn.Server) -> Any:
    """A `GuardedListener` handler giving each admitted socket to `server`'s HTTP protocol.
    Call after the server started (`server.serve(sockets=[])` with no sockets of its own)."""
    config = server.config
    protocol: Any = config.http_protocol_class
    factory = functools.partial(protocol, config=config,
                                server_state=server.server_state,
                                app_state=server.lifespan.state)
    loop = asyncio.get_running_loop()

    async def connect(csock: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(factory, csock)
        except OSError:
            with contextlib.suppress(OSError):
                csock.close()

    tasks: set[asyncio.Task[None]] = set()

    def handle(csock: socket.socket, _peer: Peer) -> None:
        task = loop.create_task(connect(csock))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return handle
