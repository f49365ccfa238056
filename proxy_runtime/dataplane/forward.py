"""One request through one cluster: endpoint choice, connection from the pool, retries
with per-try and overall timeouts, outlier bookkeeping, and the streamed response.

Two paths with the same behaviour. The fast path (`DirectExchange`) runs entirely in protocol
callbacks: it is taken when a pooled connection is idle and the route has no retries, so a
keep-alive request costs no task, no future and one write per read. Everything else (a new
connection, retries, a request body still arriving for a retry) takes the coroutine path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proxy_runtime.dataplane.balancer import record_result
from proxy_runtime.dataplane.downstream import HttpDownstream, Request
from proxy_runtime.dataplane.http1 import HOP_BY_HOP, LAST_CHUNK, STATUS_LINES, chunk, status_line
from proxy_runtime.dataplane.retry import (
    failure_status,
    should_retry_failure,
    should_retry_status,
)
from proxy_runtime.dataplane.upstream import (
    FutureExchange,
    Overflow,
    ResponseHead,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
)

if TYPE_CHECKING:
    from proxy_runtime.dataplane.balancer import EndpointState
    from proxy_runtime.dataplane.clusters import ClusterRuntime

Header = tuple[bytes, bytes]
HeaderEdit = Callable[[list[Header]], list[Header]]


class RetrySettings:
    __slots__ = ("attempts", "per_try_timeout", "retry_on")

    def __init__(self, attempts: int, per_try_timeout: float | None, retry_on: tuple[str, ...]) -> None:
        self.attempts = attempts
        self.per_try_timeout = per_try_timeout
        self.retry_on = retry_on


NO_RETRY = RetrySettings(0, None, ())


class Outcome:
    """What happened, for metrics and the access log."""

    __slots__ = ("endpoint", "flags", "status")

    def __init__(self) -> None:
        self.status = 0
        self.endpoint = ""
        self.flags = ""


Done = Callable[[Outcome], None]


def request_head(req: Request, headers: list[Header], trace: bytes = b"") -> bytes:
    """The request head for the upstream: our headers, then `trace` (trace headers already in
    wire form, see tracing.new_trace), framing rebuilt for the body."""
    parts = [req.method, b" ", req.url, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if name not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")
    if trace:
        parts.append(trace)
    body = req.body
    if body.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif body.content_length is not None:
        parts += (b"content-length: ", b"%d" % body.content_length, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def response_head(conn: Any, req: Request, head: ResponseHead,
                  response_edit: HeaderEdit | None) -> tuple[list[bytes], bool, bool]:
    """(head parts, chunked framing to the client, keep the client connection)."""
    keep = conn.response_keep_alive(req)
    status = head.status
    parts = [STATUS_LINES.get(status) or status_line(status)]
    if response_edit is None:
        parts += head.wire
    else:
        for name, value in response_edit(head.headers):
            if name not in HOP_BY_HOP:
                parts += (name, b": ", value, b"\r\n")
    chunked_out = False
    if head.content_length is not None:
        parts += (b"content-length: ", b"%d" % head.content_length, b"\r\n")
    elif not (req.method == b"HEAD" or status in (204, 304) or 100 <= status < 200):
        if req.version == "1.1":
            chunked_out = True
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            keep = False  # HTTP/1.0: the close delimits the body
    if not keep:
        parts.append(b"connection: close\r\n")
    elif req.version == "1.0":
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return parts, chunked_out, keep


# --- the fast path ------------------------------------------------------------------------


class DirectExchange:
    """Relays one response from an upstream connection to the client inside the protocol
    callbacks. Output of one upstream read is gathered and written with one call."""

    __slots__ = ("chunked_out", "cluster", "complete", "conn", "done", "endpoint", "failed", "keep",
                 "out", "outcome", "pool", "req", "response_edit", "started", "timer", "up")

    def __init__(self, conn: HttpDownstream, req: Request, cluster: ClusterRuntime,
                 endpoint: EndpointState, pool: UpstreamPool, up: UpstreamConnection,
                 response_edit: HeaderEdit | None, outcome: Outcome, done: Done) -> None:
        self.conn = conn
        self.req = req
        self.cluster = cluster
        self.endpoint = endpoint
        self.pool = pool
        self.up = up
        self.response_edit = response_edit
        self.outcome = outcome
        self.done = done
        self.out: list[bytes] = []
        self.chunked_out = False
        self.keep = True
        self.started = False
        self.complete = False
        self.failed = False
        self.timer: asyncio.TimerHandle | None = None

    def on_head(self, head: ResponseHead) -> None:
        cluster = self.cluster
        if cluster.outlier is not None and record_result(
            cluster.outlier, cluster.endpoints, self.endpoint, head.status, self.conn.loop.time()
        ):
            cluster.stats.ejected(cluster.name)
        self.outcome.status = head.status
        parts, self.chunked_out, self.keep = response_head(self.conn, self.req, head, self.response_edit)
        self.out += parts
        self.started = True
        conn = self.conn
        conn.feeder = self.up
        if conn.write_paused:
            self.up.pause_reading()

    def on_body(self, data: bytes) -> None:
        if self.chunked_out:
            if data:
                self.out.append(chunk(data))
        else:
            self.out.append(data)

    def on_done(self) -> None:
        if self.chunked_out:
            self.out.append(LAST_CHUNK)
        self.complete = True

    def flush(self) -> None:
        out = self.out
        if out:
            conn = self.conn  # conn.write, inlined
            conn.response_started = True
            if conn.transport is not None and not conn.closing:
                conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
            self.out = []
        if self.complete and not self.failed:
            self._end(reusable=self.up.finish())

    def on_error(self, err: UpstreamError) -> None:
        if self.failed or self.complete:
            return
        self.failed = True
        up = self.up
        up.finish()
        up.abort()
        self.endpoint.active_requests -= 1
        if self.timer is not None:
            self.timer.cancel()
        conn = self.conn
        conn.feeder = None
        outcome = self.outcome
        if self.req.refused:
            # the proxy ended the client's request mid-body (answered 400 or 408 already):
            # not the upstream's fault, nothing more to say
            outcome.status = self.req.refused
            outcome.flags = "DPE"
        elif not self.started:
            cluster = self.cluster
            if record_result(cluster.outlier, cluster.endpoints, self.endpoint, 503, conn.loop.time()):
                cluster.stats.ejected(cluster.name)
            status = failure_status(err.kind)
            outcome.status = status
            outcome.flags = {"timeout": "UT", "reset": "UR"}.get(err.kind, "UF")
            conn.respond(status, _failure_text(err))
        else:
            outcome.flags = "UR"  # the response already started: cut the client off
            conn.abort()
        self.done(outcome)

    def _end(self, reusable: bool) -> None:
        self.endpoint.active_requests -= 1
        if self.timer is not None:
            self.timer.cancel()
        conn = self.conn
        conn.feeder = None
        self.pool.release(self.up, reusable)
        conn.finish_response(self.keep)
        self.done(self.outcome)


def _failure_text(err: UpstreamError) -> bytes:
    if err.kind == "timeout":
        return b"upstream request timeout\n"
    return b"upstream error: " + str(err).encode() + b"\n"


def start_forward(
    conn: HttpDownstream,
    req: Request,
    cluster: ClusterRuntime,
    headers: list[Header],
    retry: RetrySettings,
    timeout: float | None,
    response_edit: HeaderEdit | None,
    hash_key: bytes | None,
    outcome: Outcome,
    done: Done,
    trace: bytes = b"",
) -> None:
    """Forward `req`; `done(outcome)` is called once the exchange is over, either way.
    `trace`: trace headers in wire form, sent after `headers`."""
    if req.refused:  # refused while a fault delay held it
        outcome.status = req.refused
        outcome.flags = "DPE"
        done(outcome)
        return
    if not cluster.endpoints:
        outcome.status = 503
        outcome.flags = "UH"
        conn.respond(503, b"no healthy upstream\n")
        done(outcome)
        return
    loop = conn.loop
    picked: EndpointState | None = None
    if not retry.attempts:
        pool = cluster.single_pool
        if pool is not None:
            endpoint = cluster.endpoints[0]
        else:
            endpoint = picked = cluster.balancer.pick(loop.time(), hash_key)
            pool = cluster.pool(endpoint)
        up = pool.take_idle()
        if up is not None:
            outcome.endpoint = endpoint.label
            endpoint.active_requests += 1
            ex = DirectExchange(conn, req, cluster, endpoint, pool, up, response_edit, outcome, done)
            if timeout is not None:
                ex.timer = loop.call_later(timeout, up.fail, UpstreamError("timeout", "route timeout"))
            up.begin(request_head(req, headers, trace), req.method == b"HEAD", ex)
            req.body.attach(up)
            return
    # The endpoint already picked goes with it: picking again would advance round robin twice
    # per request and starve every other endpoint.
    conn.spawn(_forward_task(conn, req, cluster, headers, retry, timeout, response_edit,
                             hash_key, outcome, done, trace, picked))


async def _forward_task(conn: HttpDownstream, req: Request, cluster: ClusterRuntime,
                        headers: list[Header], retry: RetrySettings, timeout: float | None,
                        response_edit: HeaderEdit | None, hash_key: bytes | None,
                        outcome: Outcome, done: Done, trace: bytes,
                        picked: EndpointState | None) -> None:
    try:
        await forward(conn, req, cluster, headers, retry=retry, timeout=timeout,
                      response_edit=response_edit, hash_key=hash_key, outcome=outcome, trace=trace,
                      first_endpoint=picked)
    finally:
        done(outcome)


# --- the coroutine path ---------------------------------------------------------------------


async def forward(
    conn: Any,
    req: Request,
    cluster: ClusterRuntime,
    headers: list[Header],
    *,
    retry: RetrySettings = NO_RETRY,
    timeout: float | None = None,
    response_edit: HeaderEdit | None = None,
    hash_key: bytes | None = None,
    outcome: Outcome,
    trace: bytes = b"",
    first_endpoint: EndpointState | None = None,
) -> None:
    """Send `req` (with `headers`, then `trace`) to `cluster` and stream the answer to `conn`.
    `first_endpoint`: the endpoint the balancer already picked for the first attempt."""
    loop = conn.loop
    if not cluster.endpoints:
        outcome.status = 503
        conn.respond(503, b"no healthy upstream\n")
        return
    head_bytes = request_head(req, headers, trace)
    is_head = req.method == b"HEAD"
    deadline = loop.time() + timeout if timeout is not None else None
    attempt = 0
    while True:
        now = loop.time()
        if attempt == 0 and first_endpoint is not None:
            endpoint, first_endpoint = first_endpoint, None
        else:
            endpoint = cluster.balancer.pick(now, hash_key)
        pool = cluster.pool(endpoint)
        try:
            up = await pool.acquire()
        except Overflow as exc:
            cluster.stats.overflowed(cluster.name, exc.limit)
            outcome.status = 503
            outcome.flags = "UO"
            conn.respond(503, b"upstream overflow: " + exc.limit.encode() + b"\n",
                         extra=[(b"x-meshcd-overflow", exc.limit.encode())])
            return
        except UpstreamError as exc:
            if record_result(cluster.outlier, cluster.endpoints, endpoint, 503, now):
                cluster.stats.ejected(cluster.name)
            if _can_retry(attempt, retry, req) and should_retry_failure(exc.kind, retry.retry_on):
                attempt += 1
                continue
            outcome.status = 503
            outcome.flags = "UF"
            conn.respond(503, b"upstream connect error: " + str(exc).encode() + b"\n")
            return
        if req.refused:
            # refused (and answered) while we waited for a connection: nothing was sent on it
            pool.release(up, True)
            outcome.status = req.refused
            outcome.flags = "DPE"
            return
        outcome.endpoint = endpoint.label
        endpoint.active_requests += 1
        ex = FutureExchange(loop)
        try:
            up.begin(head_bytes, is_head, ex)
            req.body.attach(up)
            # one timer per try: the sooner of the per-try and the overall deadline
            limit = deadline
            if retry.per_try_timeout is not None:
                per_try = loop.time() + retry.per_try_timeout
                limit = per_try if limit is None else min(limit, per_try)
            timer = None
            if limit is not None:
                timer = loop.call_at(limit, up.fail, UpstreamError("timeout", "upstream request timeout"))
            try:
                head = await ex.head
            except UpstreamError as exc:
                if timer is not None:
                    timer.cancel()
                req.body.detach()
                up.finish()
                up.abort()
                if req.refused:
                    outcome.status = req.refused  # answered by the downstream; never retried
                    outcome.flags = "DPE"
                    return
                if (exc.kind != "timeout" or retry.per_try_timeout is not None) and record_result(
                    cluster.outlier, cluster.endpoints, endpoint, 503, loop.time()
                ):
                    cluster.stats.ejected(cluster.name)
                overall_expired = deadline is not None and loop.time() >= deadline
                if (not overall_expired and _can_retry(attempt, retry, req)
                        and should_retry_failure(exc.kind, retry.retry_on)):
                    attempt += 1
                    continue
                status = failure_status(exc.kind)
                outcome.status = status
                outcome.flags = {"timeout": "UT", "reset": "UR"}.get(exc.kind, "UF")
                conn.respond(status, _failure_text(exc))
                return
            status = head.status
            if cluster.outlier is not None and record_result(
                cluster.outlier, cluster.endpoints, endpoint, status, loop.time()
            ):
                cluster.stats.ejected(cluster.name)
            if (status >= 400 and _can_retry(attempt, retry, req)
                    and should_retry_status(status, retry.retry_on)
                    and (deadline is None or loop.time() < deadline)):
                if timer is not None:
                    timer.cancel()
                req.body.detach()
                up.finish()
                up.abort()
                attempt += 1
                continue
            outcome.status = status
            if timer is not None:
                # the per-try limit covers the wait for the head; the body runs to the deadline
                timer.cancel()
                timer = None
                if deadline is not None:
                    timer = loop.call_at(deadline, up.fail, UpstreamError("timeout", "route timeout"))
            try:
                await _relay_response(conn, req, up, ex, head, response_edit)
            except UpstreamError:
                outcome.flags = "UR"
                up.finish()
                up.abort()
                return
            finally:
                if timer is not None:
                    timer.cancel()
            pool.release(up, up.finish())
            return
        finally:
            endpoint.active_requests -= 1


def _can_retry(attempt: int, retry: RetrySettings, req: Request) -> bool:
    return attempt < retry.attempts and req.body.replayable and not req.refused


async def _relay_response(
    conn: Any,
    req: Request,
    up: UpstreamConnection,
    ex: FutureExchange,
    head: ResponseHead,
    response_edit: HeaderEdit | None,
) -> None:
    parts, chunked_out, keep = response_head(conn, req, head, response_edit)
    if up.message_done:
        # the whole response is here already: one write
        pieces = ex.pending
        ex.pending = []
        if chunked_out:
            parts += [chunk(p) for p in pieces if p]
            parts.append(LAST_CHUNK)
        else:
            parts += pieces
        conn.write(b"".join(parts))
        conn.finish_response(keep)
        return
    conn.write(b"".join(parts))
    conn.feeder = up
    if conn.write_paused:
        up.pause_reading()
    if chunked_out:
        write = conn.write

        def sink(data: bytes) -> None:
            if data:
                write(chunk(data))

        ex.attach_sink(sink)
    else:
        ex.attach_sink(conn.write)
    try:
        await ex.done
    except UpstreamError:
        # the response already started: all we can do is cut the client off
        conn.feeder = None
        conn.abort()
        raise
    if chunked_out:
        conn.write(LAST_CHUNK)
    conn.feeder = None
    conn.finish_response(keep)
