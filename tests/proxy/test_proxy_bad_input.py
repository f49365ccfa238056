"""Bad input on the outbound listener: each case answered as HTTP says, the proxy unharmed.
Each test's backend and proxy are async context managers: stopped even when an assert fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hardening_support import harness_backend, running_proxy
from proxy_harness import Backend, Client, cluster, get, outbound_snapshot, raw, route, run

from proxy_runtime.dataplane.downstream import ServerLimits
from proxy_runtime.runtime import ProxyRuntime


@asynccontextmanager
async def _proxy(limits: ServerLimits | None = None,
                 **route_kw: object) -> AsyncIterator[tuple[Backend, ProxyRuntime, int]]:
    """A backend and an outbound proxy in front of it: (backend, runtime, listener port)."""
    limits = limits or ServerLimits(header_timeout=0.5, max_header_bytes=16 * 1024)
    async with harness_backend() as b, running_proxy(
        outbound_snapshot([route("c", **route_kw)], [cluster("c", b.address)]), limits
    ) as rt:
        port = rt.port_of("outbound", 0)
        assert port
        yield b, rt, port


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: svc\r\nBad Header Name: x\r\n\r\n", 400),
        (b"GET /x HTTP/9.9\r\nHost: svc\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: svc\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: svc\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(3000)) + b"\r\n", 431),
        # request smuggling: both framings at once
        (b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ],
)
def test_malformed_requests_are_refused_and_closed(request_bytes: bytes, status: int) -> None:
    async def body() -> None:
        async with _proxy() as (b, _rt, port):
            out = await raw(port, request_bytes)
            assert _status(out) == status, out[:200]
            assert b"connection: close" in out.lower()
            assert out.count(b"HTTP/1.1 ") == 1  # nothing smuggled through after the error
            assert not any(s.path == "/smuggled" for s in b.seen)
            assert b.seen == []  # nothing reached the backend
            # the proxy still serves
            assert (await get(port, "/after")).status == 200

    run(body)


def test_slow_headers_get_408_and_close() -> None:
    async def body() -> None:
        async with _proxy() as (b, _rt, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: svc\r\nX-Slow: ")
            data = await asyncio.wait_for(reader.read(), 10)  # read() returns at EOF: we were closed
            assert data.startswith(b"HTTP/1.1 408 "), data
            writer.close()
            assert b.seen == []

    run(body)


def test_unknown_host_is_404_with_a_clear_body() -> None:
    async def body() -> None:
        async with _proxy() as (b, _rt, port):
            r = await get(port, "/x", host="nobody.example")
            assert r.status == 404
            assert b"no virtual host" in r.body and b"nobody.example" in r.body
            assert b.seen == []

    run(body)


def test_upstream_reset_before_head_is_502() -> None:
    async def body() -> None:
        async with _proxy() as (_b, _rt, port):
            r = await get(port, "/reset-before-head")
            assert r.status == 502
            assert (await get(port, "/fine")).status == 200

    run(body)


def test_upstream_reset_mid_body_cuts_the_client_off() -> None:
    async def body() -> None:
        async with _proxy() as (_b, _rt, port):
            c = Client(port)
            with pytest.raises(ConnectionError):
                await c.request(path="/reset-mid-body")
            await c.close()
            assert (await get(port, "/fine")).status == 200

    run(body)


def test_upstream_that_never_answers_is_504_at_the_route_timeout() -> None:
    async def body() -> None:
        async with _proxy(timeout_ms=300) as (_b, _rt, port):
            r = await get(port, "/hang")
            assert r.status == 504
            assert b"timeout" in r.body

    run(body)


def test_streams_chunked_and_large_bodies_both_ways() -> None:
    async def body() -> None:
        async with _proxy() as (_b, _rt, port):
            c = Client(port)
            r = await c.request(path="/chunked")
            assert r.status == 200 and r.body == b"part0;part1;part2;"
            assert r.headers.get("transfer-encoding") == "chunked"
            r = await c.request(path="/big/3000000")
            assert r.status == 200 and len(r.body) == 3_000_000
            payload = bytes(range(256)) * 8000  # 2 MB: past every buffer, so flow control is exercised
            r = await c.request("POST", "/echo", body=payload)
            assert r.status == 200 and r.body == payload
            # chunked request body, re-framed to the upstream
            writer = c.writer
            assert writer is not None
            writer.write(b"POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            r = await c.read_response()
            assert r.status == 200 and r.body == b"hello world"
            r = await c.request("HEAD", "/big/10")
            assert r.status == 200 and r.headers["content-length"] == "10"
            await c.close()

    run(body)


def test_pipelined_requests_are_answered_in_order_and_http10_closes() -> None:
    async def body() -> None:
        async with _proxy() as (_b, rt, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow/100 HTTP/1.1\r\nHost: svc\r\n\r\nGET /second HTTP/1.1\r\nHost: svc\r\n\r\n"
                         b"GET /third HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert data.count(b"HTTP/1.1 200 ") == 3
            assert data.index(b"slow") < data.index(b"/second") < data.index(b"/third")
            out = await raw(port, b"GET /old HTTP/1.0\r\nHost: svc\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200 ") and b'"/old"' in out  # and the proxy closed it
            c = Client(port)
            r = await c.request("POST", "/echo", headers={"expect": "100-continue"}, body=b"abc")
            assert r.status == 200 and r.body == b"abc"
            await c.close()
            for _ in range(50):  # the proxy sees the close a moment later
                if rt.in_flight() == 0:
                    break
                await asyncio.sleep(0.02)
            assert rt.in_flight() == 0

    run(body)


def test_random_garbage_never_breaks_the_proxy() -> None:
    import random

    async def body() -> None:
        async with _proxy() as (_b, _rt, port):
            rng = random.Random(1234)
            valid = b"POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello"
            inputs = []
            for _ in range(60):
                data = bytearray(valid)
                for _ in range(rng.randint(1, 6)):  # flip, insert or cut bytes
                    op = rng.random()
                    pos = rng.randrange(len(data))
                    if op < 0.4:
                        data[pos] = rng.randrange(256)
                    elif op < 0.7:
                        data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
                    else:
                        del data[pos:]
                        break
                inputs.append(bytes(data))
            outs = await asyncio.gather(*(raw(port, d, read_timeout=1.0) for d in inputs))
            for out in outs:
                if out:  # an answer, if any, is HTTP (400/408/431/200/404...), never a crash
                    assert out.startswith(b"HTTP/1.1 "), out[:80]
            assert (await get(port, "/still-fine")).status == 200

    run(body)


def test_a_request_body_that_stops_arriving_gets_408_and_close() -> None:
    async def body() -> None:
        async with _proxy(ServerLimits(body_timeout=0.5)) as (_b, rt, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: 100\r\n\r\nonly-a-little")
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert (await get(port, "/fine")).status == 200
            for _ in range(50):
                if rt.in_flight() == 0:
                    break
                await asyncio.sleep(0.02)
            assert rt.in_flight() == 0

    run(body)
