"""Upstream side: one HTTP/1.1 connection to an endpoint (an asyncio.Protocol with an
httptools response parser) and the per-endpoint keep-alive pool with circuit breaking.

Bodies are streamed: the response body goes straight from this protocol to a sink (the
downstream connection), and each side pauses the other's reading when its own write buffer
is full (pause_writing/resume_writing)."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import httptools

from proxy_runtime.dataplane.http1 import HOP_BY_HOP, final_coding_is_chunked
from proxy_runtime.dataplane.tls import (
    NOT_AN_SVID,
    TlsBufferedReads,
    peer_spiffe_ids,
    svid_spiffe_id,
)
from proxy_runtime.errors import ProxyRuntimeError

Header = tuple[bytes, bytes]


class UpstreamError(ProxyRuntimeError):
    """The upstream failed. kind: connect-failure | reset | timeout | tls-identity."""

    temporary = True

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Overflow(ProxyRuntimeError):
    """A circuit-breaker limit was hit; `limit` names it (max_connections | max_pending_requests)."""

    temporary = True

    def __init__(self, limit: str) -> None:
        super().__init__(limit)
        self.limit = limit


class ResponseHead:
    """`wire`: the response's headers that are forwarded (hop-by-hop ones left out), already
    in wire form: name, b": ", value, b"\\r\\n" for each, names lowercased."""

    __slots__ = ("chunked", "content_length", "keep_alive", "status", "wire")

    def __init__(self, status: int, wire: list[bytes], keep_alive: bool,
                 content_length: int | None = None, chunked: bool = False) -> None:
        self.status = status
        self.wire = wire
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked

    @property
    def headers(self) -> list[Header]:
        """(name, value) pairs of the forwarded headers (for header edits)."""
        wire = self.wire
        return [(wire[i], wire[i + 2]) for i in range(0, len(wire), 4)]


class Exchange(Protocol):
    """What an upstream connection reports to while it serves one request."""

    def on_head(self, head: ResponseHead) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_done(self) -> None: ...
    def on_error(self, err: UpstreamError) -> None: ...
    def flush(self) -> None: ...


class FutureExchange:
    """Exchange for coroutine code: the head and the end become futures; the body buffers
    until a sink is attached."""

    __slots__ = ("done", "head", "pending", "sink")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.head: asyncio.Future[ResponseHead] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.sink: Callable[[bytes], None] | None = None
        self.pending: list[bytes] = []

    def on_head(self, head: ResponseHead) -> None:
        if not self.head.done():
            self.head.set_result(head)

    def on_body(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
        else:
            self.pending.append(data)

    def on_done(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def on_error(self, err: UpstreamError) -> None:
        if not self.head.done():
            self.head.set_exception(err)
        elif not self.done.done():
            self.done.set_exception(err)

    def flush(self) -> None:
        pass

    def attach_sink(self, sink: Callable[[bytes], None]) -> None:
        """Send the response body (buffered so far and from now on) to `sink`."""
        for piece in self.pending:
            sink(piece)
        self.pending = []
        self.sink = sink


class UpstreamConnection(asyncio.BaseProtocol):
    """One upstream connection, used by one exchange at a time."""

    # A plain protocol by duck typing (data_received), deliberately not an asyncio.Protocol:
    # uvloop lends buffers only to protocols that are not, and the TLS subclass wants one.

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.requests_served = 0
        self.ex: Any = None  # the current Exchange
        self.wire: list[bytes] = []
        self.content_length: int | None = None
        self.chunked = False
        self.head: ResponseHead | None = None
        self.is_head_request = False
        self.message_done = False
        # the request body is fully written (set by the RequestBody); a connection whose
        # request ended early must not be reused: the rest of the body would be read as the
        # next request's start (and the next request as the rest of this body)
        self.request_done = False
        self.write_paused = False
        self.body_source: Any = None  # RequestBody feeding us (paused when our buffer is full)

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        ex = self.ex
        if ex is None or self.message_done:
            return
        head = self.head
        if head is not None and head.content_length is None and not head.chunked:
            # read-until-close body: the close is the end of the message
            self.on_message_complete()
            ex.flush()
            return
        ex.on_error(UpstreamError("reset", str(exc) if exc else "upstream closed the connection"))

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:
            # bytes on an idle connection: protocol violation, drop the connection
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.abort()
            ex.on_error(UpstreamError("reset", f"invalid upstream response: {exc}"))
            return
        ex.flush()  # one write downstream per read upstream

    def pause_writing(self) -> None:
        self.write_paused = True
        src = self.body_source
        if src is not None:
            src.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        src = self.body_source
        if src is not None:
            src.resume()

    # --- httptools callbacks ----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"content-length":
                self.content_length = int(value)
            elif lname == b"transfer-encoding":
                # a token list: the last line's last coding decides (`xchunked` is not chunked:
                # such a body ends with the connection)
                self.chunked = final_coding_is_chunked(value)
        else:
            self.wire += (lname, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if 100 <= status < 200:
            return  # informational; the real head follows
        head = ResponseHead(status, self.wire, parser.should_keep_alive(),
                            self.content_length, self.chunked)
        self.head = head
        self.ex.on_head(head)
        if self.is_head_request or status in (204, 304):
            # no body follows; httptools cannot be told so for HEAD, so never reuse it
            if self.is_head_request:
                head.keep_alive = False
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        self.ex.on_body(body)

    def on_message_complete(self) -> None:
        if self.head is None:
            self.wire = []  # end of a 1xx
            self.content_length = None
            self.chunked = False
            return
        if self.message_done:
            return
        self.message_done = True
        self.ex.on_done()

    # --- used by the exchange ---------------------------------------------------------
    def fail(self, err: UpstreamError) -> None:
        """Fail the current exchange (a timeout, say)."""
        ex = self.ex
        if ex is not None and not self.message_done:
            ex.on_error(err)

    def begin(self, head: bytes, is_head_request: bool, ex: Any) -> None:
        """Start an exchange: reset per-exchange state and send the request head."""
        self.ex = ex
        self.wire = []
        self.content_length = None
        self.chunked = False
        self.head = None
        self.message_done = False
        self.request_done = False  # until the request body says it is all written
        self.is_head_request = is_head_request
        self.requests_served += 1
        assert self.transport is not None
        self.transport.write(head)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def finish(self) -> bool:
        """End the exchange; True if the connection may be reused: both the request (head
        and whole body written) and the response completed, and the upstream keeps it open."""
        head = self.head
        reusable = (not self.closed and self.message_done and self.request_done
                    and head is not None and head.keep_alive)
        self.ex = None
        self.body_source = None
        return reusable

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamConnectionTls(TlsBufferedReads, UpstreamConnection, asyncio.BufferedProtocol):
    """UpstreamConnection over TLS: reads land in a lent buffer (see tls.py)."""


class UpstreamPool:
    """Keep-alive connections to one endpoint. Circuit breaking as in Envoy: at most
    `max_connections` open, at most `max_pending_requests` waiting for one; beyond that the
    request fails fast with Overflow."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        expected_peer_ids: tuple[str, ...] = (),
        max_connections: int = 1024,
        max_pending_requests: int = 1024,
        max_requests_per_connection: int = 0,
        connect_timeout: float = 1.0,
        on_connect: Callable[[], None] | None = None,
        on_connect_failure: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.expected_peer_ids = expected_peer_ids
        self.max_connections = max_connections
        self.max_pending_requests = max_pending_requests
        self.max_requests_per_connection = max_requests_per_connection
        self.connect_timeout = connect_timeout
        self.on_connect = on_connect
        self.on_connect_failure = on_connect_failure
        self.idle: list[UpstreamConnection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self._all: set[UpstreamConnection] = set()
        self.retired = False

    def take_idle(self) -> UpstreamConnection | None:
        """An idle keep-alive connection, without waiting; None if there is none."""
        if self.retired:
            return None
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def acquire(self) -> UpstreamConnection:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        if self.open < self.max_connections:
            return await self._connect()
        if len(self.waiters) >= self.max_pending_requests:
            raise Overflow("max_pending_requests" if self.max_pending_requests else "max_connections")
        waiter: asyncio.Future[UpstreamConnection | None] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            got = await waiter
        except BaseException:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            raise
        if got is None:  # a slot freed up but no connection came with it
            return await self._connect()
        return got

    async def _connect(self) -> UpstreamConnection:
        self.open += 1
        try:
            _, proto = await asyncio.wait_for(
                self.loop.create_connection(
                    (lambda: UpstreamConnectionTls(self)) if self.ssl_context else (lambda: UpstreamConnection(self)),
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.server_hostname if self.ssl_context else None,
                ),
                self.connect_timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            self.open -= 1
            self._wake_one()
            if self.on_connect_failure is not None:
                self.on_connect_failure()
            raise UpstreamError("connect-failure", f"{self.host}:{self.port}: {exc or 'timeout'}") from None
        conn: UpstreamConnection = proto
        if self.ssl_context is not None:
            # mesh mTLS: the peer must be an X509-SVID, and one of the expected IDs if any
            assert conn.transport is not None
            sslobj = conn.transport.get_extra_info("ssl_object")
            peercert = sslobj.getpeercert() if sslobj else None
            spiffe_id = svid_spiffe_id(peercert)
            problem = ""
            if spiffe_id is None:
                problem = f"{NOT_AN_SVID}: SPIFFE IDs {', '.join(peer_spiffe_ids(peercert)) or '(none)'}"
            elif self.expected_peer_ids and spiffe_id not in self.expected_peer_ids:
                problem = f"peer SPIFFE ID {spiffe_id} is not the expected {', '.join(self.expected_peer_ids)}"
            if problem:
                conn.abort()
                self.open -= 1
                self._wake_one()
                if self.on_connect_failure is not None:
                    self.on_connect_failure()
                raise UpstreamError("connect-failure", problem)
        self._all.add(conn)
        if self.on_connect is not None:
            self.on_connect()
        return conn

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        if reusable and self.max_requests_per_connection and (
            conn.requests_served >= self.max_requests_per_connection
        ):
            reusable = False
        if reusable and not self.retired:
            while self.waiters:
                waiter = self.waiters.popleft()
                if not waiter.done():
                    waiter.set_result(conn)
                    return
            self.idle.append(conn)
            return
        conn.abort()  # connection_lost -> forget() frees the slot

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self._all:
            self._all.discard(conn)
            self.open -= 1
            if conn in self.idle:
                self.idle.remove(conn)
            self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def retire(self) -> None:
        """No longer in the config: close idle connections, busy ones close on release."""
        self.retired = True
        for conn in self.idle:
            conn.abort()
        self.idle.clear()

    def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self.idle.clear()
