"""L4 relay: bytes both ways between a client connection and an upstream one, with flow
control (each side pauses the other's reading while its own write buffer is full) and
half-close passed through where the transport allows it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class RelaySide(asyncio.Protocol):
    """One side of a relay. `peer` is the other side; data before it is linked is buffered."""

    def __init__(self, on_close: Callable[[], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: RelaySide | None = None
        self.buffer: list[bytes] = []
        self.closed = False
        self.eof = False
        self.on_close = on_close
        self.paused_reading = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def link(self, peer: RelaySide) -> None:
        self.peer = peer
        if self.buffer:
            for piece in self.buffer:
                peer.send(piece)
            self.buffer = []
        if self.eof:
            peer.send_eof()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None:
            peer.send(data)
        else:
            self.buffer.append(data)
            if sum(len(b) for b in self.buffer) > 256 * 1024:
                self.pause()

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.peer is not None:
            self.peer.send_eof()
        # keep our write side open until the peer finishes (TLS transports close anyway)
        return self.transport is None or self.transport.get_extra_info("ssl_object") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.peer is not None and not self.peer.closed:
            if exc is None:
                self.peer.close()
            else:
                self.peer.abort()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume()

    # --- used by the peer ----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_eof(self) -> None:
        t = self.transport
        if t is None or self.closed:
            return
        if t.can_write_eof():
            t.write_eof()
            if self.eof:  # both directions finished
                t.close()
        # else (TLS): no half-close in asyncio's TLS; the connection stays open until one
        # side closes it, which closing the other side then follows

    def pause(self) -> None:
        if self.transport is not None and not self.closed and not self.paused_reading:
            self.paused_reading = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed and self.paused_reading:
            self.paused_reading = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


async def relay_to(
    client: RelaySide,
    connect: Callable[[Callable[[], RelaySide]], Awaitable[tuple[Any, RelaySide]]],
) -> bool:
    """Open the upstream side with `connect` and link both ways; False if it failed."""
    client.pause()  # hold the client until the upstream exists
    try:
        _, upstream = await connect(RelaySide)
    except (TimeoutError, OSError):
        client.abort()
        return False
    client.peer = upstream
    upstream.link(client)
    client.link(upstream)
    client.resume()
    return True
