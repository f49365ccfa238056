"""Downstream side: the HTTP/1.1 server protocol (httptools at the asyncio.Protocol level).

One protocol per client connection. It parses requests, hands each complete head to the
server's handler coroutine (one at a time per connection: pipelined requests queue), streams
the request body to whoever the handler attaches, and enforces the input limits: malformed
request -> 400, oversized headers -> 431, CL+TE together -> 400 (the parser refuses them),
a Transfer-Encoding other than exactly `chunked` -> 400 (not final) or 501 (another coding),
header read timeout -> 408. A body the parser refuses after the head went upstream (a bad
chunk size, a Content-Length trailer...) answers 400, a body that stops arriving 408; both
close, cut the upstream attempt off and mark the request `refused` so it is never retried.
Timeouts are checked by a sweep over all connections every fraction of a second, so the hot
path arms no timer per request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import httptools

from proxy_runtime.config.paths import PathError, normalize_target
from proxy_runtime.dataplane.http1 import LAST_CHUNK, chunk, simple_response
from proxy_runtime.dataplane.tls import (
    NOT_AN_SVID,
    TlsBufferedReads,
    downstream_sni,
    svid_spiffe_id,
)
from proxy_runtime.errors import ProxyRuntimeError

log = logging.getLogger("meshcd.proxy")
_monotonic = time.monotonic
Header = tuple[bytes, bytes]

# bytes of a path that needs no normalization (proxy_runtime.config.paths): unreserved,
# sub-delims, ":", "@", "/". A path of only these, starting with "/", without "//" or "/."
# is already normal: the common case costs three scans in C.
_PLAIN_PATH = bytes(sorted(set(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/")))
HIGH_WATER = 256 * 1024  # request bytes buffered before we stop reading the client
DISCARD_LIMIT = 1024 * 1024  # unread request body we still read and drop to keep the connection


class HeadersTooLarge(ProxyRuntimeError):
    """A request head over the size limit (answered 431)."""


class BadFraming(ProxyRuntimeError):
    """A request head whose message framing we refuse; `status` is the answer (400 or 501)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def check_transfer_encoding(values: list[bytes]) -> None:
    """Transfer-Encoding (all its field lines) as the comma-separated token list it is
    (RFC 9112 6.1): the only coding this proxy implements is `chunked`, once, last.
    Raises BadFraming: 400 if chunked is not the final coding (the body length cannot be
    known) or is applied twice, 501 for any other coding."""
    tokens = [t.strip(b" \t").lower() for v in values for t in v.split(b",")]
    tokens = [t for t in tokens if t]
    if not tokens or tokens[-1] != b"chunked":
        raise BadFraming(400, "chunked is not the final transfer coding")
    if tokens.count(b"chunked") > 1:
        raise BadFraming(400, "chunked applied more than once")
    if len(tokens) > 1:
        raise BadFraming(501, f"transfer coding {tokens[0].decode('latin-1')!r} not implemented")


class RequestBody:
    """The request body on its way upstream. Chunks go straight to the attached upstream
    connection; until one is attached (or while it is being replaced for a retry) they are
    buffered, up to `replay_limit` for replay, with the client paused past HIGH_WATER."""

    __slots__ = (
        "chunked", "complete", "conn", "content_length", "discard", "has_body", "pending", "pending_size",
        "replay", "replay_limit", "replay_size", "replayable", "sent", "sink",
    )

    def __init__(self, conn: HttpDownstream, chunked: bool, content_length: int | None,
                 replay_limit: int) -> None:
        self.conn = conn
        self.chunked = chunked
        self.content_length = content_length
        self.has_body = chunked or bool(content_length)
        self.complete = not self.has_body
        self.sink: Any = None
        self.sent = False  # some attempt already consumed `pending`
        self.discard = False  # answered already: the rest of the body is read and dropped
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] = []
        self.replay_size = 0
        self.replay_limit = replay_limit
        self.replayable = (content_length or 0) <= replay_limit

    def _frame(self, data: bytes) -> bytes:
        return chunk(data) if self.chunked else data

    def feed(self, data: bytes) -> None:
        if self.discard:
            return
        if self.replayable:
            self.replay.append(data)
            self.replay_size += len(data)
            if self.replay_size > self.replay_limit:
                self.replayable = False
                self.replay = []
        sink = self.sink
        if sink is not None:
            sink.write(self._frame(data))
        else:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > HIGH_WATER:
                self.conn.pause_reading_for_body()

    def finish(self) -> None:
        self.complete = True
        sink = self.sink
        if sink is not None:
            if self.chunked:
                sink.write(LAST_CHUNK)
            sink.request_done = True

    def attach(self, upstream: Any) -> None:
        """Send the body to `upstream` (an UpstreamConnection): what came so far, then live."""
        if not self.has_body:
            upstream.request_done = True
            return
        # on a retry the earlier attempt consumed `pending`: replay the copy
        chunks = self.replay if self.sent else self.pending
        self.sent = True
        self.pending = []
        self.pending_size = 0
        frame = self._frame
        for piece in chunks:
            upstream.write(frame(piece))
        if self.complete:
            if self.chunked:
                upstream.write(LAST_CHUNK)
            upstream.request_done = True
        self.sink = upstream
        upstream.body_source = self
        self.conn.resume_reading_for_body()

    def detach(self) -> None:
        self.sink = None

    def pause(self) -> None:
        self.conn.pause_reading_for_body()

    def resume(self) -> None:
        self.conn.resume_reading_for_body()


class _NoBody(RequestBody):
    """The body of a request without one: shared, never changes."""

    def __init__(self) -> None:
        super().__init__(None, False, None, 0)  # type: ignore[arg-type]

    def feed(self, data: bytes) -> None:  # pragma: no cover - the parser sends no body
        pass

    def finish(self) -> None:
        pass

    def attach(self, upstream: Any) -> None:
        upstream.request_done = True

    def detach(self) -> None:
        pass


NO_BODY = _NoBody()


class Request:
    """One request. `head_complete`: its head is parsed; `handled`: the handler has run for
    it; `refused`: the status the proxy itself ended it with while its body was being read
    (400: the parser refused the body, 408: the body stopped arriving), 0 while it is not:
    a refused request is over, nothing may send or retry it any more."""

    __slots__ = ("body", "chunked", "content_length", "expect_continue", "handled", "head_complete",
                 "headers", "host", "keep_alive", "method", "path", "refused", "started",
                 "transfer_encoding", "url", "version")

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.path = b""
        self.headers: list[Header] = []
        self.host = b""
        self.version = "1.1"
        self.keep_alive = True
        self.body: RequestBody = NO_BODY
        self.started = 0.0
        self.expect_continue = False
        self.content_length: int | None = None
        self.chunked = False
        self.transfer_encoding: list[bytes] | None = None
        self.head_complete = False
        self.handled = False
        self.refused = 0

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


# Called with each request head. It answers (now or later) through conn.respond / conn.write
# + conn.finish_response; slow work goes to conn.spawn(coroutine).
Handler = Callable[["HttpDownstream", Request], None]


class ServerLimits:
    __slots__ = ("body_timeout", "header_timeout", "idle_timeout", "max_header_bytes", "replay_limit")

    def __init__(self, *, max_header_bytes: int = 64 * 1024, header_timeout: float = 10.0,
                 idle_timeout: float = 300.0, replay_limit: int = 64 * 1024,
                 body_timeout: float = 60.0) -> None:
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.replay_limit = replay_limit
        self.body_timeout = body_timeout  # longest pause while a request body is being read


class HttpServerState:
    """What the connections of one listener share: the handler, the limits, the set of
    connections (for the timeout sweep and for drain) and a coarse clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: Handler, limits: ServerLimits,
                 *, tls_identity: bool = False) -> None:
        self.loop = loop
        self.handler = handler
        self.limits = limits
        self.connections: set[HttpDownstream] = set()
        self.now = loop.time()
        self.draining = False
        self.tls_identity = tls_identity
        self.in_flight = 0
        self.ready: list[tuple[HttpDownstream, Request]] = []  # heads read in this poll
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep()

    def start_ready(self) -> None:
        ready = self.ready
        self.ready = []
        for conn, req in ready:
            try:
                conn._start(req)
            except Exception:  # one request's failure must not strand the others
                log.exception("request start failed")

    def _sweep(self) -> None:
        now = self.now = self.loop.time()
        limits = self.limits
        for conn in list(self.connections):
            conn.check_timeouts(now, limits)
        self._sweeper = self.loop.call_later(0.25, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    def drain(self) -> None:
        """Stop keep-alive: idle connections close now, busy ones after their response."""
        self.draining = True
        for conn in list(self.connections):
            if conn.current is None and not conn.in_headers:
                conn.close()


class HttpDownstream(asyncio.BaseProtocol):
    # A plain protocol by duck typing (data_received), deliberately not an asyncio.Protocol:
    # uvloop lends buffers only to protocols that are not, and the TLS subclass wants one.
    def __init__(self, state: HttpServerState) -> None:
        self.state = state
        self.loop = state.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer_ip = ""
        self.peer_port = 0
        self.principal: str | None = None  # SPIFFE ID of an mTLS peer
        self.local_ip = ""  # the address the client connected to
        self.sni: str | None = None  # the SNI of a TLS client
        self.tls = False
        self.current: Request | None = None
        self.parsing: Request | None = None
        self.queue: deque[Request] = deque()
        self.in_headers = False
        self.header_bytes = 0
        self.too_large = False
        self.since = state.now  # start of the header read, or of idleness
        self.fresh = True  # no request yet on this connection
        self.closing = False
        self.write_paused = False
        self.read_paused = False
        self.feeder: Any = None  # upstream connection streaming a response to us
        self.response_started = False
        self.stop_parsing = False
        self.line_data: bytes | None = None
        # (authz cache of the config, path, method, host, allowed): the handler's memo
        self.authz_memo: tuple[Any, bytes, bytes, bytes, bool] | None = None
        # (route cache of the config, url, method, host, route choice): the same for routes
        self.route_memo: tuple[Any, bytes, bytes, bytes, Any] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip, self.peer_port = peer[0], peer[1]
        local = transport.get_extra_info("sockname")
        if local:
            self.local_ip = local[0]
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.tls = True
            self.sni = downstream_sni(sslobj)
            self.principal = svid_spiffe_id(sslobj.getpeercert())
            if self.principal is None:
                log.info("inbound %s:%s refused: %s", self.peer_ip, self.peer_port, NOT_AN_SVID)
                self.closing = True
                transport.abort()  # type: ignore[attr-defined]
                return
        self.since = self.state.now
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.state.connections.discard(self)
        if self.current is not None:
            self.current = None
            self.state.in_flight -= 1
        feeder = self.feeder
        if feeder is not None:
            # the client went away mid-response: the upstream connection is useless now
            feeder.abort()

    def data_received(self, data: bytes) -> None:
        if self.stop_parsing:
            return
        # a chunk that starts between two requests starts with the next request line
        self.line_data = data if self.parsing is None else None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # protocol upgrades (websocket, h2c) are not supported: serve this request, then close
            self.stop_parsing = True
            if self.current is not None:
                self.current.keep_alive = False
        except httptools.HttpParserError as exc:
            self.stop_parsing = True
            if self.too_large:
                self.refuse(431, b"request header fields too large\n")
            else:
                cause = (exc.__context__ or exc) if isinstance(exc, httptools.HttpParserCallbackError) else exc
                status = cause.status if isinstance(cause, BadFraming) else 400
                self.refuse(status, b"bad request: " + str(cause).encode(errors="replace") + b"\n")

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.feeder is not None:
            self.feeder.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.feeder is not None:
            self.feeder.resume_reading()

    # --- httptools callbacks ----------------------------------------------------------
    def on_message_begin(self) -> None:
        req = Request()
        self.parsing = req
        self.in_headers = True
        self.header_bytes = 0
        self.since = self.state.now

    def on_url(self, url: bytes) -> None:
        req: Request = self.parsing  # type: ignore[assignment]
        req.url += url
        self.header_bytes += len(url)
        if self.header_bytes > self.state.limits.max_header_bytes:
            self.too_large = True
            raise HeadersTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        req: Request = self.parsing  # type: ignore[assignment]
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.state.limits.max_header_bytes:
            self.too_large = True
            raise HeadersTooLarge()
        if not self.in_headers:
            return  # a trailer field: not forwarded, never framing
        lname = name.lower()
        req.headers.append((lname, value))
        if lname == b"host":
            req.host = value
        elif lname == b"content-length":
            req.content_length = int(value)  # the parser already refused a malformed one
        elif lname == b"transfer-encoding":
            if req.transfer_encoding is None:
                req.transfer_encoding = [value]
            else:
                req.transfer_encoding.append(value)
        elif lname == b"expect" and value.lower() == b"100-continue":
            req.expect_continue = True

    def on_headers_complete(self) -> None:
        req: Request = self.parsing  # type: ignore[assignment]
        self.in_headers = False
        if req.transfer_encoding is not None:
            check_transfer_encoding(req.transfer_encoding)  # raises: refused before it starts
            req.chunked = True
        self.since = self.state.now
        parser = self.parser
        req.method = method = parser.get_method()
        url = req.url
        data = self.line_data
        self.line_data = None
        # the version from the request line when it is at the start of this chunk: the
        # parser's get_http_version() formats a new str each time (a microsecond)
        if data is not None and data.startswith(b" HTTP/1.1\r\n", len(method) + 1 + len(url)) and (
            data.startswith(method)
        ):
            req.version = "1.1"
        else:
            req.version = parser.get_http_version()
        req.keep_alive = parser.should_keep_alive()
        q = url.find(b"?")
        path = url if q < 0 else url[:q]
        # (find, not `in`: measured twice as fast here)
        if (not path.startswith(b"/") or path.translate(None, _PLAIN_PATH) or path.find(b"//") >= 0
                or path.find(b"/.") >= 0 or (q >= 0 and url.find(b"#") >= 0)):
            url, path = self._normalize(req, url)  # raises: refused before it starts
        req.path = path
        req.head_complete = True
        if req.chunked or req.content_length:
            req.body = RequestBody(self, req.chunked, req.content_length, self.state.limits.replay_limit)
        req.started = _monotonic()
        if self.current is None:
            # after this poll's other reads: requests read together are sent upstream
            # together, which saves the proxy and its peers a context switch per request.
            # One loop callback per poll runs them all (not one Handle per request).
            self.current = req
            state = self.state
            state.in_flight += 1
            ready = state.ready
            ready.append((self, req))
            if len(ready) == 1:
                self.loop.call_soon(state.start_ready)
        else:
            self.queue.append(req)

    def _normalize(self, req: Request, url: bytes) -> tuple[bytes, bytes]:
        """Normalize the request target (authorization, routing and the upstream all see the
        result); an absolute-form target's authority becomes the Host. Raises BadFraming."""
        try:
            authority, target = normalize_target(url.decode("utf-8", "surrogateescape"))
        except PathError as exc:
            raise BadFraming(400, str(exc)) from None
        req.url = url = target.encode("utf-8", "surrogateescape")
        if authority is not None:
            host = authority.encode("utf-8", "surrogateescape")
            req.host = host
            req.headers = [(n, v) for n, v in req.headers if n != b"host"]
            req.headers.insert(0, (b"host", host))
        q = url.find(b"?")
        return url, (url if q < 0 else url[:q])

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        if req is not None:
            self.since = self.state.now  # body progress (the body timeout)
            req.body.feed(body)

    def on_message_complete(self) -> None:
        req = self.parsing
        if req is not None:
            req.body.finish()
        self.parsing = None

    # --- request lifecycle ----------------------------------------------------------------
    def _start(self, req: Request) -> None:
        """Run the handler for `req`, already counted in flight and set as current."""
        if self.current is not req or self.closing:
            return  # the connection went away before its turn
        self.fresh = False
        self.response_started = False
        req.handled = True
        if req.expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            self.state.handler(self, req)
        except Exception:
            self._handler_failed()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Continue the current request in a task (errors answer 500 or cut the client off)."""
        self.loop.create_task(self._run(coro))

    async def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception:
            self._handler_failed()

    def _handler_failed(self) -> None:
        log.exception("request handler failed")
        if self.current is None:
            return
        if not self.response_started:
            self.respond(500, b"internal proxy error\n", keep_alive=False)
        else:
            self.abort()

    def response_keep_alive(self, req: Request) -> bool:
        """Whether this response may leave the connection open (drives `connection: close`)."""
        return req.keep_alive and not self.state.draining and not self.closing and not self.stop_parsing

    def respond(self, status: int, body: bytes, *, keep_alive: bool | None = None,
                extra: list[Header] | None = None) -> None:
        """Answer the current request with a small response of the proxy's own."""
        req = self.current
        keep = (self.response_keep_alive(req) if req is not None else False) if keep_alive is None else keep_alive
        self.response_started = True
        if self.transport is not None and not self.closing:
            self.transport.write(simple_response(status, body, close=not keep, extra=extra))
        self.finish_response(keep)

    def finish_response(self, keep_alive: bool) -> None:
        """The current response is fully written; move on to the next request or close."""
        req = self.current
        self.current = None
        self.feeder = None
        if req is not None:
            self.state.in_flight -= 1
            body = req.body
            if not body.complete:
                # answered before the body ended: read the rest and drop it if it is small,
                # otherwise close (reading megabytes nobody wants is worse)
                if keep_alive and (body.content_length or 0) <= DISCARD_LIMIT:
                    body.discard = True
                    body.sink = None
                    body.pending = []
                else:
                    keep_alive = False
        if not keep_alive or self.closing:
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.current = nxt
            self.state.in_flight += 1
            self._start(nxt)
            return
        self.since = self.state.now
        if self.read_paused:
            self.read_paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        self.response_started = True
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def pause_reading_for_body(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading_for_body(self) -> None:
        if self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = False
            self.transport.resume_reading()

    def refuse(self, status: int, body: bytes) -> None:
        """The parser refused the input: answer `status` and close. A request whose head was
        complete is taken back: before its handler ran it never starts; after, the upstream
        attempt is cut off and the request is marked refused (never sent again, no retry)."""
        req = self.parsing
        if req is None or not req.head_complete:
            self.reject(status, body)
            return
        req.refused = status
        if req in self.queue:
            # pipelined behind the current request, never started: stop after the current one
            self.queue.remove(req)
            if self.current is not None:
                self.current.keep_alive = False
            else:
                self.close()
            return
        if req is not self.current:
            self.close()  # answered already (the rest of its body was read and dropped)
            return
        if not req.handled:
            # read in the same poll as its head: it never starts (_start sees it is not current)
            self.current = None
            self.state.in_flight -= 1
            self.reject(status, body)
            return
        sink = req.body.sink
        req.body.detach()
        self.stop_parsing = True
        if not self.response_started:
            self.respond(status, body, keep_alive=False)
        else:
            self.abort()
        if sink is not None:
            sink.abort()  # the upstream saw a part of this request: that connection is done

    def reject(self, status: int, body: bytes) -> None:
        """Answer a request we could not parse and close (the stream position is lost)."""
        if self.current is not None:
            # a response is in progress for an earlier request: just stop after it
            self.current.keep_alive = False
            return
        if self.transport is not None and not self.closing:
            self.transport.write(simple_response(status, body, close=True))
        self.close()

    def check_timeouts(self, now: float, limits: ServerLimits) -> None:
        if self.current is not None:
            req = self.parsing
            if req is not None and not self.in_headers and now - self.since > limits.body_timeout:
                # a request body that stopped arriving: give up on the request and the client
                self.stop_parsing = True
                req.refused = 408  # over: the upstream attempt cut off below is not retried
                sink = req.body.sink
                if not self.response_started:
                    self.respond(408, b"request body read timeout\n", keep_alive=False)
                else:
                    self.abort()
                if sink is not None:
                    sink.abort()
            return
        if self.in_headers or self.fresh:
            if now - self.since > limits.header_timeout:
                if self.in_headers:
                    self.stop_parsing = True
                    self.reject(408, b"request header read timeout\n")
                else:
                    self.close()
        elif now - self.since > limits.idle_timeout:
            self.close()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.current is not None:
            self.current = None
            self.state.in_flight -= 1
        if self.transport is not None:
            self.transport.abort()


class HttpDownstreamTls(TlsBufferedReads, HttpDownstream, asyncio.BufferedProtocol):
    """HttpDownstream for a TLS connection: reads land in a lent buffer (see tls.py)."""
