from __future__ import annotations

from proxy_harness import Backend, Client, cluster, get, outbound_snapshot, route, run

from proxy_runtime.runtime import Ack, ProxyRuntime


def test_outbound_routes_to_backend_and_keeps_alive() -> None:
    async def body() -> None:
        import asyncio
        b = await Backend("a").start()
        rt = ProxyRuntime(asyncio.get_running_loop())
        res = await rt.apply(outbound_snapshot([route("c")], [cluster("c", b.address)]))
        assert isinstance(res, Ack), res
        port = rt.port_of("outbound", 0)
        r = await get(port, "/hello")
        assert r.status == 200, r
        assert r.json()["path"] == "/hello"
        c = Client(port)
        for i in range(5):
            r = await c.request(path=f"/k{i}")
            assert r.status == 200
        await c.close()
        assert b.connections <= 2
        await rt.aclose()
        await b.stop()

    run(body)
