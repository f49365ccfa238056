"""Applying configs: NACKs keep the old config serving, atomic swap under load, in-flight
requests finish on their config, listeners re-bound only when their port changes,
persistence, and the admin API. The NACK and swap tests run on both data planes (`dataplane`:
builtin, envoy; tests/proxy/dataplanes.py)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from dataplanes import BuiltinPlane, EnvoyPlane, PlaneFactory
from proxy_harness import Backend, Client, cluster, get, outbound_snapshot, route, run

from proxy_runtime.admin import start_admin
from proxy_runtime.config import (
    Outbound,
    PathMatch,
    RouteMatch,
    Snapshot,
    VirtualHost,
    snapshot_to_json,
)
from proxy_runtime.runtime import Ack, Nack, ProxyRuntime
from proxy_runtime.serve import admin_routes


def _bad_regex(a: Backend) -> dict[str, Any]:
    return outbound_snapshot([route("A", match=RouteMatch(path=PathMatch(regex="/v(1")))], [cluster("A", a.address)])


def _dangling(a: Backend) -> dict[str, Any]:
    return outbound_snapshot([route("missing")], [cluster("A", a.address)])


def _duplicate_port(a: Backend) -> dict[str, Any]:
    from proxy_harness import inbound, inbound_listener

    snap = Snapshot(
        inbound=inbound("cart", "shop", [inbound_listener(a.address, "DISABLE", port=18555)]),
        outbound=Outbound(port=18555, virtual_hosts=(VirtualHost("svc", ("svc",), (route("A"),)),)),
        clusters=(cluster("A", a.address),),
    )
    return snapshot_to_json(snap)


def _big_regex(a: Backend) -> dict[str, Any]:
    # RE2 compiles it; Envoy refuses RE2 programs over 100 instructions (its default limit)
    return outbound_snapshot([route("A", match=RouteMatch(path=PathMatch(regex="/(a|b|c|d){40}x")))],
                             [cluster("A", a.address)])


def _nacks(rt: Any) -> int:
    return int(rt.rt.stats.nacks if isinstance(rt, BuiltinPlane) else rt.host.dp.stats.nacks)


def _good_version(rt: Any) -> str | None:
    if isinstance(rt, BuiltinPlane):
        return rt.rt.active.version if rt.rt.active is not None else None
    assert isinstance(rt, EnvoyPlane)
    good = rt.host.dp.control.good
    return good.version if good is not None else None


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (_bad_regex, "outbound.virtualHosts[0].routes[0].match.path.regex"),
        (_dangling, "unknown cluster 'missing'"),
        (_duplicate_port, "port 18555 is already used"),
        (_big_regex, "program size"),
        (lambda a: "{not json", "not valid JSON"),
        (lambda a: {"outbound": {"port": "eighty"}}, "outbound.port"),
    ],
)
def test_nack_keeps_the_old_config_serving(make: Any, needle: str, dataplane: PlaneFactory) -> None:
    if dataplane.name == "envoy" and needle == "not valid JSON":
        pytest.skip("the agent hands Envoy's data plane a parsed document (the fleet client parses)")

    async def body() -> None:
        a = await Backend("a").start()
        rt = await dataplane()
        good = await rt.apply(outbound_snapshot([route("A")], [cluster("A", a.address)]))
        assert isinstance(good, Ack)
        port = rt.port("outbound")
        before, version = _nacks(rt), _good_version(rt)
        res = await rt.apply(make(a))
        assert isinstance(res, Nack)
        assert needle in res.error, res.error
        assert _good_version(rt) == version
        r = await get(port, "/still")
        assert r.status == 200 and r.json()["backend"] == "a"
        assert _nacks(rt) == before + 1
        await rt.aclose()

    run(body)


def test_nack_when_a_new_port_cannot_be_bound(dataplane: PlaneFactory) -> None:
    async def body() -> None:
        a = await Backend("a").start()
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        rt = await dataplane()
        good = await rt.apply(outbound_snapshot([route("A")], [cluster("A", a.address)]))
        assert isinstance(good, Ack)
        port = rt.port("outbound")
        snap = Snapshot(outbound=Outbound(port=busy, virtual_hosts=(VirtualHost("svc", ("svc",), (route("A"),)),)),
                        clusters=(cluster("A", a.address),))
        res = await rt.apply(snapshot_to_json(snap))
        assert isinstance(res, Nack) and f"127.0.0.1:{busy}" in res.error, res
        if rt.name == "envoy":  # Envoy's own refusal, not the agent's checks
            assert res.error.startswith("Envoy rejected it:"), res.error
        assert (await get(port, "/x")).status == 200
        taken.close()
        await rt.aclose()

    run(body)


def test_swap_under_load_loses_no_request_and_in_flight_finish_on_their_config(
        dataplane: PlaneFactory) -> None:
    async def body() -> None:
        a, b = await Backend("a").start(), await Backend("b").start()
        clusters = [cluster("A", a.address), cluster("B", b.address)]
        to_a = outbound_snapshot([route("A")], clusters)
        to_b = outbound_snapshot([route("B")], clusters)
        rt = await dataplane()
        assert isinstance(await rt.apply(to_a), Ack)
        port = rt.port("outbound")
        # a slow request that starts on config A
        slow = asyncio.ensure_future(get(port, "/slow/400"))
        await asyncio.sleep(0.1)
        statuses: list[int] = []
        stop = asyncio.Event()

        async def load() -> None:
            c = Client(port)
            while not stop.is_set():
                statuses.append((await c.request(path="/load")).status)
            await c.close()

        workers = [asyncio.ensure_future(load()) for _ in range(6)]
        for i in range(20):
            res = await rt.apply(to_b if i % 2 == 0 else to_a)
            assert isinstance(res, Ack)
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*workers)
        assert len(statuses) > 100
        assert set(statuses) == {200}
        r = await slow
        assert r.status == 200 and r.headers["x-backend"] == "a"  # finished on the config it started with
        assert rt.port("outbound") == port  # same port: never re-bound
        assert len(a.seen) > 0 and len(b.seen) > 0
        await rt.aclose()

    run(body)


def test_a_changed_port_is_rebound_and_the_old_one_closed(dataplane: PlaneFactory) -> None:
    async def body() -> None:
        a = await Backend("a").start()
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        new_port = free.getsockname()[1]
        free.close()
        rt = await dataplane()
        assert isinstance(await rt.apply(outbound_snapshot([route("A")], [cluster("A", a.address)])), Ack)
        old_port = rt.port("outbound")
        snap = Snapshot(outbound=Outbound(port=new_port, virtual_hosts=(VirtualHost("svc", ("svc",), (route("A"),)),)),
                        clusters=(cluster("A", a.address),))
        assert isinstance(await rt.apply(snapshot_to_json(snap)), Ack)
        assert (await get(new_port, "/new")).status == 200
        with pytest.raises(OSError):
            await get(old_port, "/old")
        await rt.aclose()

    run(body)


def test_last_good_snapshot_is_persisted_and_served_after_restart(tmp_path: Path) -> None:
    async def body() -> None:
        a = await Backend("a").start()
        rt = ProxyRuntime(asyncio.get_running_loop(), state_dir=tmp_path)
        snap = outbound_snapshot([route("A")], [cluster("A", a.address)], revision="abc123")
        good = await rt.apply(snap)
        assert isinstance(good, Ack)
        assert isinstance(await rt.apply(_dangling(a)), Nack)  # a NACK does not overwrite it
        await rt.aclose()
        saved = json.loads((tmp_path / "snapshot.json").read_text())
        assert saved["version"] == good.version and saved["revision"] == "abc123"
        assert not [p for p in tmp_path.iterdir() if p.name != "snapshot.json"]  # no temp files left
        rt2 = ProxyRuntime(asyncio.get_running_loop(), state_dir=tmp_path)
        res = await rt2.load_persisted()
        assert isinstance(res, Ack) and res.version == good.version
        port = rt2.port_of("outbound", 0)
        assert port and (await get(port, "/again")).status == 200
        await rt2.aclose()

    run(body)


def test_admin_api(pki: Any) -> None:
    from proxy_harness import identity

    async def body() -> None:
        a = await Backend("a").start()
        rt = ProxyRuntime(asyncio.get_running_loop())
        admin = await start_admin(admin_routes(rt), "127.0.0.1", 0)
        aport = admin.sockets[0].getsockname()[1]
        assert (await get(aport, "/healthz")).status == 200
        assert (await get(aport, "/ready")).status == 503
        snap = outbound_snapshot([route("A")], [cluster("A", a.address)], revision="r1",
                                 identity=identity(pki.ca.pem, pki.client, pki.client_id))
        good = await rt.apply(snap)
        assert isinstance(good, Ack)
        assert (await get(aport, "/ready")).status == 200
        port = rt.port_of("outbound", 0)
        assert port
        for _ in range(3):
            await get(port, "/m")
        await get(port, "/x", host="unknown")
        dump = (await get(aport, "/config_dump")).json()
        assert dump["version"] == good.version and dump["revision"] == "r1"
        assert dump["snapshot"]["identity"]["privateKeyPem"] == "[redacted]"
        assert "PRIVATE KEY" not in json.dumps(dump)
        assert dump["applied_at"].endswith("Z")
        text = (await get(aport, "/metrics")).body.decode()
        assert ('mesh_requests_total{destination_workload="A",direction="outbound",'
                'response_class="2xx",source_workload="shop/web"} 3.0') in text
        assert 'response_class="4xx"' in text
        assert "mesh_request_duration_seconds_bucket" in text
        assert (f'mesh_config_info{{proxy_id="",revision="r1",service="",'
                f'version="{good.version}"}} 1.0') in text
        rt.stats.proxy_id, rt.stats.service = "web-1", "web.shop"  # what the agent sets
        text = (await get(aport, "/metrics")).body.decode()
        assert (f'mesh_config_info{{proxy_id="web-1",revision="r1",service="web.shop",'
                f'version="{good.version}"}} 1.0') in text
        assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
        assert "mesh_upstream_connections_total" in text
        await asyncio.sleep(1.05)  # the window shows completed seconds only
        window = (await get(aport, "/stats/window?seconds=5")).json()
        assert len(window["seconds"]) == 5
        totals = {k: sum(s["requests"][k] for s in window["seconds"]) for k in ("2xx", "4xx")}
        assert totals == {"2xx": 3, "4xx": 1}
        assert sum(sum(s["latency_buckets"]) for s in window["seconds"]) == 4
        assert (await get(aport, "/nope")).status == 404
        admin.close()
        await rt.aclose()

    run(body)


def test_a_port_that_changes_role_is_handed_over(dataplane: PlaneFactory) -> None:
    from proxy_harness import inbound, inbound_listener

    async def body() -> None:
        a = await Backend("a").start()
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        rt = await dataplane()
        out = Snapshot(outbound=Outbound(port=port, virtual_hosts=(VirtualHost("svc", ("svc",), (route("A"),)),)),
                       clusters=(cluster("A", a.address),))
        assert isinstance(await rt.apply(snapshot_to_json(out)), Ack)
        assert (await get(port, "/as-outbound")).status == 200
        inb = Snapshot(inbound=inbound("cart", "shop", [inbound_listener(a.address, "DISABLE", port=port)]))
        res = await rt.apply(snapshot_to_json(inb))
        assert isinstance(res, Ack), res
        r = await get(port, "/as-inbound", host="anything")
        assert r.status == 200 and r.json()["path"] == "/as-inbound"
        await rt.aclose()

    run(body)
