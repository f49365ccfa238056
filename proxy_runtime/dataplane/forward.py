"""One request through one cluster: endpoint choice, connection from the pool, retries
with per-try and overall timeouts, outlier bookkeeping, and the streamed response."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy_runtime.dataplane.balancer import record_result
from proxy_runtime.dataplane.downstream import HttpDownstream, Request
from proxy_runtime.dataplane.http1 import HOP_BY_HOP, LAST_CHUNK, chunk, status_line
from proxy_runtime.dataplane.retry import (
    failure_status,
    should_retry_failure,
    should_retry_status,
)
from proxy_runtime.dataplane.upstream import (
    Overflow,
    ResponseHead,
    UpstreamConnection,
    UpstreamError,
)

if TYPE_CHECKING:
    from proxy_runtime.dataplane.clusters import ClusterRuntime

Header = tuple[bytes, bytes]


class RetrySettings:
    __slots__ = ("attempts", "per_try_timeout", "retry_on")

    def __init__(self, attempts: int, per_try_timeout: float | None, retry_on: tuple[str, ...]) -> None:
        self.attempts = attempts
        self.per_try_timeout = per_try_timeout
        self.retry_on = retry_on


NO_RETRY = RetrySettings(0, None, ())


def request_head(req: Request, headers: list[Header]) -> bytes:
    """The request head for the upstream: our headers, framing rebuilt for the body."""
    parts = [req.method, b" ", req.url, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if name not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")
    body = req.body
    if body.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif body.content_length is not None:
        parts += (b"content-length: ", b"%d" % body.content_length, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _fail_waiter(up: UpstreamConnection, err: UpstreamError) -> None:
    up.fail(err)


class Outcome:
    """What happened, for metrics and the access log."""

    __slots__ = ("endpoint", "flags", "status")

    def __init__(self) -> None:
        self.status = 0
        self.endpoint = ""
        self.flags = ""


async def forward(
    conn: HttpDownstream,
    req: Request,
    cluster: ClusterRuntime,
    headers: list[Header],
    *,
    retry: RetrySettings = NO_RETRY,
    timeout: float | None = None,
    response_edit: Callable[[list[Header]], list[Header]] | None = None,
    hash_key: bytes | None = None,
    outcome: Outcome,
) -> None:
    """Send `req` (with `headers`) to `cluster` and stream the answer to `conn`."""
    loop = conn.loop
    head_bytes = request_head(req, headers)
    is_head = req.method == b"HEAD"
    deadline = loop.time() + timeout if timeout is not None else None
    attempt = 0
    while True:
        now = loop.time()
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
            record_result(cluster.outlier, cluster.endpoints, endpoint, 503, now)
            if _can_retry(attempt, retry, req) and should_retry_failure(exc.kind, retry.retry_on):
                attempt += 1
                continue
            outcome.status = 503
            outcome.flags = "UF"
            conn.respond(503, b"upstream connect error: " + str(exc).encode() + b"\n")
            return
        outcome.endpoint = f"{endpoint.address}:{endpoint.port}"
        endpoint.active_requests += 1
        try:
            up.begin(head_bytes, is_head)
            req.body.attach(up)
            # one timer per try: the sooner of the per-try and the overall deadline
            limit = deadline
            if retry.per_try_timeout is not None:
                per_try = loop.time() + retry.per_try_timeout
                limit = per_try if limit is None else min(limit, per_try)
            timer = None
            if limit is not None:
                timer = loop.call_at(limit, _fail_waiter, up, UpstreamError("timeout", "upstream request timeout"))
            try:
                head = await up.head_waiter  # type: ignore[misc]
            except UpstreamError as exc:
                if timer is not None:
                    timer.cancel()
                req.body.detach()
                up.finish()
                up.abort()
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
                text = b"upstream request timeout\n" if exc.kind == "timeout" else (
                    b"upstream error: " + str(exc).encode() + b"\n")
                conn.respond(status, text)
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
                    timer = loop.call_at(deadline, _fail_waiter, up, UpstreamError("timeout", "route timeout"))
            try:
                await _relay_response(conn, req, up, head, response_edit)
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
    return attempt < retry.attempts and req.body.replayable


async def _relay_response(
    conn: HttpDownstream,
    req: Request,
    up: UpstreamConnection,
    head: ResponseHead,
    response_edit: Callable[[list[Header]], list[Header]] | None,
) -> None:
    keep = conn.response_keep_alive(req)
    headers = head.headers
    if response_edit is not None:
        headers = response_edit(headers)
    parts = [status_line(head.status)]
    for name, value in headers:
        if name not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")
    status = head.status
    bodyless = req.method == b"HEAD" or status in (204, 304) or 100 <= status < 200
    chunked_out = False
    if head.content_length is not None:
        parts += (b"content-length: ", b"%d" % head.content_length, b"\r\n")
    elif not bodyless:
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
    conn.write(b"".join(parts))
    conn.feeder = up
    if conn.write_paused:
        up.pause_reading()
    if chunked_out:
        write = conn.write

        def sink(data: bytes) -> None:
            if data:
                write(chunk(data))

        up.attach_sink(sink)
    else:
        up.attach_sink(conn.write)
    try:
        await up.done_waiter  # type: ignore[misc]
    except UpstreamError:
        # the response already started: all we can do is cut the client off
        conn.feeder = None
        conn.current = None
        conn.abort()
        raise
    if chunked_out:
        conn.write(LAST_CHUNK)
    conn.feeder = None
    conn.finish_response(keep)
