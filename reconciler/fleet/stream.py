"""One proxy's fleet stream: websockets' sans-I/O server protocol driven by an asyncio
protocol over the TLS transport. No task, future or queue per stream: bytes in, events to the
fleet server, frames out. With ten thousand streams that is most of the controller's memory
and CPU per stream saved compared with a connection object and a handler coroutine each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, Protocol

from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol as WebSocketProtocol
from websockets.server import ServerProtocol

from proxy_runtime.protocol.fleet import (
    MAX_TO_CONTROLLER_BYTES,
    SUBPROTOCOL,
    Error,
    encode,
)
from reconciler.errors import MeshcdError

log = logging.getLogger("meshcd.fleet")


class Refused(MeshcdError):
    """End the stream with an `error` message (the owner has audited it)."""


class StreamOwner(Protocol):
    hello_timeout: float

    def stream_made(self, stream: FleetStream) -> None: ...
    def stream_opened(self, stream: FleetStream, path: str) -> None: ...
    def stream_message(self, stream: FleetStream, data: bytes) -> None: ...
    def stream_silent(self, stream: FleetStream) -> None: ...
    def stream_lost(self, stream: FleetStream) -> None: ...


class FleetStream(asyncio.Protocol):
    __slots__ = ("bad_stats", "missed", "owner", "peer", "pong", "proxy_id", "serial",
                 "spiffe_id", "state", "timer", "transport", "ws")

    def __init__(self, owner: StreamOwner) -> None:
        self.owner = owner
        self.ws = ServerProtocol(subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                                 max_size=MAX_TO_CONTROLLER_BYTES)
        self.transport: Any = None
        self.peer = ""
        self.spiffe_id: str | None = None
        self.proxy_id: str | None = None  # set once the hello is accepted
        self.serial = 0  # the server's number for this stream's accepted hello
        self.bad_stats = False  # a malformed stats window was logged for this stream
        self.state = "handshake"  # handshake -> open -> closing
        self.pong: bytes | None = None  # payload of the unanswered keepalive ping
        self.missed = 0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        name = transport.get_extra_info("peername")
        self.peer = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.owner.hello_timeout, self._no_hello)
        self.owner.stream_made(self)

    def data_received(self, data: bytes) -> None:
        if self.state == "closing":
            return
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if self.state == "closing":
                break
            try:
                self._event(event)
            except Refused as exc:
                self.refuse(str(exc))
        self.flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.state = "closing"
        self.owner.stream_lost(self)

    # -- events ----------------------------------------------------------------------------

    def _event(self, event: Any) -> None:
        if isinstance(event, Request):
            response = self.ws.accept(event)
            self.ws.send_response(response)
            if response.status_code != 101:
                self.state = "closing"
                return
            self.state = "open"
            self._fresh_parser()
            self.owner.stream_opened(self, event.path)
        elif isinstance(event, Frame):
            if event.opcode is Opcode.TEXT and event.fin:
                self.owner.stream_message(self, bytes(event.data))
            elif event.opcode is Opcode.PONG:
                if self.pong is not None and bytes(event.data) == self.pong:
                    self.pong, self.missed = None, 0
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                raise Refused("only whole text frames are spoken here")
            # PING is answered and CLOSE handled by the protocol itself

    def _fresh_parser(self) -> None:
        """websockets' server parser is a generator that keeps the handshake request (~2 KB of
        headers) alive in its frame for the stream's life. Once the handshake is done and no
        byte is buffered, a plain frame parser replaces it."""
        ws = self.ws
        if not ws.reader.buffer and not ws.reader.eof:
            ws.parser = WebSocketProtocol.parse(ws)
            next(ws.parser)

    def _no_hello(self) -> None:
        if self.proxy_id is None and self.state != "closing":
            self.owner.stream_silent(self)

    # -- output ----------------------------------------------------------------------------

    def flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            else:  # the protocol wants the connection closed
                self.state = "closing"
                transport.close()
        if self.ws.close_expected() and self.state != "closing":
            self.state = "closing"
            transport.close()

    def send_text(self, data: bytes | str) -> bool:
        """Send one message; False if the stream is going away."""
        if self.state != "open":
            return False
        try:
            self.ws.send_text(data.encode() if isinstance(data, str) else data)
        except InvalidState:
            return False
        self.flush()
        return True

    def ping(self) -> None:
        if self.state != "open":
            return
        self.pong = os.urandom(4)
        with contextlib.suppress(InvalidState):
            self.ws.send_ping(self.pong)
        self.flush()

    def refuse(self, reason: str) -> None:
        """Say why in an `error` message, close with 1008 (policy violation)."""
        if self.state == "open":
            with contextlib.suppress(InvalidState):
                self.ws.send_text(encode(Error(reason)).encode())
                self.ws.send_close(1008, reason[:120])
        self.close_now()

    def close(self, code: int = 1001, reason: str = "going away") -> None:
        if self.state == "open":
            with contextlib.suppress(InvalidState):
                self.ws.send_close(code, reason)
        self.close_now()

    def close_now(self) -> None:
        self.flush()
        self.state = "closing"
        if self.transport is not None:
            self.transport.close()  # after what is buffered is written

    def abort(self) -> None:
        self.state = "closing"
        if self.transport is not None:
            self.transport.abort()
