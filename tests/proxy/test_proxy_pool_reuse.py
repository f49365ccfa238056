"""#17 finding 1: an upstream connection goes back to the pool only if both the request
(its body fully written) and the response completed; otherwise the next client's request
would be read as the rest of an earlier client's body (cross-client smuggling)."""

from __future__ import annotations

import asyncio

from hardening_support import connection, head_backend, running_proxy, status_of
from proxy_harness import Client, cluster, get, outbound_snapshot, route, run


def test_early_answer_with_the_body_unfinished_does_not_pool_the_connection() -> None:
    async def body() -> None:
        async with head_backend() as b, running_proxy(
            outbound_snapshot([route("c", timeout_ms=2000)], [cluster("c", b.address)])
        ) as rt:
            port = rt.port_of("outbound", 0)
            assert port
            # warm the pool: one idle keep-alive connection to the backend
            assert (await get(port, "/warm")).status == 200
            async with connection(port) as (reader, writer):
                # client A: promises 200 body bytes, sends 10; the next hop answers 403 at once
                writer.write(b"POST /deny HTTP/1.1\r\nHost: svc\r\nContent-Length: 200\r\n\r\n0123456789")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert status_of(head) == 403, head
                # client B, on another connection, while A still holds its unfinished body
                c = Client(port)
                try:
                    r = await asyncio.wait_for(c.request(path="/victim"), 5)
                finally:
                    await c.close()
                assert r.status == 200, (r.status, r.body)
                assert r.body.startswith(b"ok /victim"), r.body
            # the backend saw B's request as a request, never as A's body
            assert b.heads.count("/victim") == 1
            assert "/victim" in b.complete

    run(body)


def test_a_completed_exchange_still_reuses_its_connection() -> None:
    async def body() -> None:
        async with head_backend() as b, running_proxy(
            outbound_snapshot([route("c")], [cluster("c", b.address)])
        ) as rt:
            port = rt.port_of("outbound", 0)
            assert port
            c = Client(port)
            try:
                for i in range(3):
                    r = await c.request("POST", f"/p{i}", body=b"x" * 50)
                    assert r.status == 200 and r.body == b"ok /p%d body=%s" % (i, b"x" * 50)
            finally:
                await c.close()
            assert len(b.connections) == 1  # keep-alive to the upstream kept working

    run(body)
