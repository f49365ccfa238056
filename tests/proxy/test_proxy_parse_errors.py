"""#17 finding 2: a request the proxy's own parser refuses answers 400 (501 for a transfer
coding it does not implement) and closes; an upstream attempt already under way is cancelled
and never retried: the app sees the request head at most once."""

from __future__ import annotations

import asyncio

import pytest
from hardening_support import connection, head_backend, read_until_close, running_proxy, status_of
from proxy_harness import cluster, get, outbound_snapshot, route, run

from proxy_runtime.config import RetryPolicy
from proxy_runtime.dataplane.downstream import ServerLimits

# a route that retries everything it may: a refused request must still reach the app once at most
_RETRYING = route("c", timeout_ms=1500,
                  retries=RetryPolicy(attempts=2, per_try_timeout_ms=400,
                                      retry_on=("5xx", "reset", "connect-failure", "gateway-error")))

_HEAD = b"POST /del HTTP/1.1\r\nHost: svc\r\n"
_CHUNKED = _HEAD + b"Transfer-Encoding: chunked\r\n\r\n"

# (the whole request in one write, the status expected)
WHOLE = {
    "te-xchunked": (_HEAD + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    "te-chunked-then-identity": (_HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    "te-gzip-chunked": (_HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
    "te-gzip-then-chunked-lines": (_HEAD + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   b"5\r\nhello\r\n0\r\n\r\n", 501),
    "te-chunked-twice": (_HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-negative": (_CHUNKED + b"-1\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-0x": (_CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-plus": (_CHUNKED + b"+5\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-bare-lf": (_CHUNKED + b"5\nhello\n0\n\n", 400),
    "content-length-trailer": (_CHUNKED + b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n", 400),
}

# (a good start the proxy forwards, then what the parser refuses)
SPLIT = {
    "chunk-size-negative": (_CHUNKED + b"5\r\nhello\r\n", b"-1\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-0x": (_CHUNKED + b"5\r\nhello\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"),
    "chunk-bare-lf": (_CHUNKED + b"5\r\nhello\r\n", b"5\nhello\n0\n\n"),
    "content-length-trailer": (_CHUNKED + b"5\r\nhello\r\n", b"0\r\nContent-Length: 5\r\n\r\n"),
}


@pytest.mark.parametrize("case", sorted(WHOLE))
def test_refused_request_in_one_write_never_reaches_the_app(case: str) -> None:
    data, status = WHOLE[case]

    async def body() -> None:
        async with head_backend() as b, running_proxy(
            outbound_snapshot([_RETRYING], [cluster("c", b.address)])
        ) as rt:
            port = rt.port_of("outbound", 0)
            assert port
            async with connection(port) as (reader, writer):
                writer.write(data)
                out = await read_until_close(reader, 1.0)  # answered and closed at once
            assert status_of(out) == status, out[:200]
            assert out.count(b"HTTP/1.1 ") == 1
            assert b"connection: close" in out.lower()
            await asyncio.sleep(0.5)  # past a per-try timeout: a retry would show now
            assert b.heads == []
            assert (await get(port, "/after")).status == 200  # the proxy still serves

    run(body)


@pytest.mark.parametrize("case", sorted(SPLIT))
def test_refused_body_after_forwarding_cancels_the_upstream_and_never_retries(case: str) -> None:
    start, bad = SPLIT[case]

    async def body() -> None:
        async with head_backend() as b, running_proxy(
            outbound_snapshot([_RETRYING], [cluster("c", b.address)])
        ) as rt:
            port = rt.port_of("outbound", 0)
            assert port
            async with connection(port) as (reader, writer):
                writer.write(start)
                for _ in range(200):  # until the head reached the app
                    if b.heads:
                        break
                    await asyncio.sleep(0.01)
                assert b.heads == ["/del"]
                writer.write(bad)
                out = await read_until_close(reader, 1.0)  # well before the per-try timeout
            assert status_of(out) == 400, out[:200]
            assert out.count(b"HTTP/1.1 ") == 1
            assert b"connection: close" in out.lower()
            await asyncio.sleep(0.2)
            assert all(c.closed for c in b.connections)  # the upstream attempt was cut off
            await asyncio.sleep(0.6)  # past the per-try timeout: a retry would show now
            assert b.heads == ["/del"]  # once, never retried
            assert b.complete == []
            assert (await get(port, "/after")).status == 200

    run(body)


def test_transfer_encoding_is_a_token_list() -> None:
    """`chunked` in any case, with whitespace, is chunked; the body is re-framed upstream."""

    async def body() -> None:
        async with head_backend() as b, running_proxy(
            outbound_snapshot([route("c")], [cluster("c", b.address)])
        ) as rt:
            port = rt.port_of("outbound", 0)
            assert port
            async with connection(port) as (reader, writer):
                writer.write(b"POST /te HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding:  CHUNKED \r\n"
                             b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                out = await read_until_close(reader, 5.0)
            assert status_of(out) == 200, out[:200]
            assert out.endswith(b"ok /te body=hello")

    run(body)


def test_a_body_that_stops_arriving_is_answered_408_and_never_retried() -> None:
    """The same rule for the body read timeout: the proxy ended the request, so the upstream
    attempt it cut off is not retried (the app must not see the head again)."""

    slow_retrying = route("c", timeout_ms=5000,
                          retries=RetryPolicy(attempts=2, per_try_timeout_ms=2000,
                                              retry_on=("5xx", "reset", "connect-failure", "gateway-error")))

    async def body() -> None:
        async with head_backend() as b, running_proxy(
            outbound_snapshot([slow_retrying], [cluster("c", b.address)]), ServerLimits(body_timeout=0.3)
        ) as rt:
            port = rt.port_of("outbound", 0)
            assert port
            async with connection(port) as (reader, writer):
                writer.write(_HEAD + b"Content-Length: 100\r\n\r\nonly-a-little")
                out = await read_until_close(reader, 3.0)
            assert status_of(out) == 408, out[:200]
            await asyncio.sleep(0.5)  # a retry on the reset would show by now
            assert b.heads == ["/del"]

    run(body)


def test_upstream_transfer_encoding_is_a_token_list_too() -> None:
    """A response whose final transfer coding is not chunked (`xchunked`) is delimited by the
    close, not parsed as chunked because the value contains the word."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello")
        await writer.drain()
        writer.close()

    async def body() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        try:
            address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
            async with running_proxy(outbound_snapshot([route("c")], [cluster("c", address)])) as rt:
                port = rt.port_of("outbound", 0)
                assert port
                async with connection(port) as (reader, writer):
                    writer.write(b"GET /x HTTP/1.1\r\nHost: svc\r\n\r\n")
                    out = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 5)
                # re-framed as chunked to the client, and ended properly (not cut off)
                assert status_of(out) == 200, out
                assert out.endswith(b"\r\n\r\n8\r\n5\r\nhello\r\n0\r\n\r\n"), out
        finally:
            server.close()

    run(body)
