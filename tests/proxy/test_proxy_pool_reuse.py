"""#17 finding 1: an upstream connection goes back to the pool only if both the request
(its body fully written) and the response completed; otherwise the next client's request
would be read as the rest of an earlier client's body (cross-client smuggling)."""

from __future__ import annotations

import asyncio
from typing import Any

from hardening_support import connection, harness_backend, head_backend, running_proxy, status_of
from proxy_harness import (
    Client,
    cluster,
    get,
    identity,
    inbound,
    inbound_listener,
    outbound_snapshot,
    route,
    run,
)

from proxy_runtime.config import (
    AuthorizationPolicy,
    Operation,
    Outbound,
    Rule,
    Snapshot,
    UpstreamTls,
    VirtualHost,
    snapshot_to_json,
)


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


def test_early_403_from_the_callees_proxy_over_mtls(pki: Any) -> None:
    """The issue's chain: caller proxy -> (mTLS) -> callee proxy whose authorization denies
    /deny* at once -> app. Client B's request must reach the app as its own request."""
    deny = (AuthorizationPolicy(name="shop/deny", action="DENY",
                                rules=(Rule(operations=(Operation(paths=("/deny*",)),)),)),)

    async def body() -> None:
        async with harness_backend("app") as app:
            callee = snapshot_to_json(Snapshot(
                identity=identity(pki.ca.pem, pki.server, pki.server_id),
                inbound=inbound("cart", "shop", [inbound_listener(app.address, "STRICT")], deny),
            ))
            async with running_proxy(callee) as srv:
                sport = srv.port_of("inbound-http", 0)
                assert sport
                tls = UpstreamTls(mode="MUTUAL", peer_spiffe_ids=(pki.server_id,))
                caller = snapshot_to_json(Snapshot(
                    identity=identity(pki.ca.pem, pki.client, pki.client_id),
                    outbound=Outbound(port=0, virtual_hosts=(
                        VirtualHost("cart", ("cart",), (route("cart", timeout_ms=2000),)),)),
                    clusters=(cluster("cart", f"127.0.0.1:{sport}", tls=tls),),
                ))
                async with running_proxy(caller) as cli:
                    port = cli.port_of("outbound", 0)
                    assert port
                    assert (await get(port, "/warm", host="cart")).status == 200
                    async with connection(port) as (reader, writer):
                        writer.write(b"POST /deny HTTP/1.1\r\nHost: cart\r\nContent-Length: 200\r\n\r\n0123456789")
                        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                        assert status_of(head) == 403, head
                        r = await asyncio.wait_for(get(port, "/victim", host="cart"), 5)
                        assert r.status == 200, (r.status, r.body)
                        assert r.json()["path"] == "/victim"
                    assert [s.path for s in app.seen] == ["/warm", "/victim"]

    run(body)
