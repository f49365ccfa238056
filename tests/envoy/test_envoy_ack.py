"""A real Envoy driven over ADS by the agent: ACK, NACK with Envoy's reason while the old
config keeps serving."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from envoy_harness import Backend, envoy_plane, free_port, inbound_doc, needs_envoy, wait_status

from proxy_runtime.runtime import Ack, Nack

pytestmark = needs_envoy


def test_snapshot_is_acked_once_envoy_acked_every_type_and_then_serves(
        tmp_path: Path, backend: Backend) -> None:
    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            result = await dp.apply(inbound_doc(port, backend.port))
            assert isinstance(result, Ack), result
            await wait_status(port, 200, "/hello", within=3.0)
            assert ("GET", "/hello", b"") in backend.seen

    asyncio.run(scenario())


def test_a_snapshot_envoy_refuses_is_nacked_with_its_reason_and_the_old_config_serves(
        tmp_path: Path, backend: Backend) -> None:
    from proxy_runtime.config import model as pc
    from proxy_runtime.config import snapshot_to_json

    async def scenario() -> None:
        port, out_port = free_port(), free_port()
        async with envoy_plane(tmp_path) as dp:
            assert isinstance(await dp.apply(inbound_doc(port, backend.port)), Ack)
            await wait_status(port, 200)
            good = dp.control.good
            # RE2 takes this regex; Envoy refuses its program size (over 100 by default)
            snap = pc.Snapshot(
                inbound=pc.Inbound(service="web", namespace="shop", listeners=(
                    pc.InboundListener(port=port, local_address=f"127.0.0.1:{backend.port}",
                                       mtls_mode="DISABLE", bind_address="127.0.0.1"),)),
                outbound=pc.Outbound(port=out_port, virtual_hosts=(pc.VirtualHost(
                    name="api", domains=("api",), routes=(pc.Route(
                        clusters=(pc.WeightedCluster("api"),),
                        match=pc.RouteMatch(path=pc.PathMatch(regex="/(a|b|c|d){40}x"))),)),)),
                clusters=(pc.Cluster(name="api", endpoints=(
                    pc.Endpoint(f"127.0.0.1:{backend.port}"),)),))
            result = await dp.apply(snapshot_to_json(snap))
            assert isinstance(result, Nack), result
            assert "program size" in result.error, result.error
            assert dp.control.good is good
            await wait_status(port, 200, "/still")  # the old config serves on
            # and Envoy went back to it whole: the listener of the refused version is not there
            await asyncio.sleep(0.3)
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", out_port), timeout=0.5).close()
            assert isinstance(await dp.apply(inbound_doc(port, backend.port, revision="r3")), Ack)

    asyncio.run(scenario())


def test_the_per_second_window_comes_from_envoys_stats_sink(
        tmp_path: Path, backend: Backend) -> None:
    import time

    from envoy_harness import http

    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            assert isinstance(await dp.apply(inbound_doc(port, backend.port,
                                                         deny_paths=("/admin*",))), Ack)
            await wait_status(port, 200)
            await asyncio.sleep(2.1)  # the probes' flush is behind us
            start = time.time()
            for batch in range(3):  # over several flushes (one a second)
                for path in ("/a", "/b", "/admin"):
                    await asyncio.to_thread(http, port,
                                            f"GET {path}{batch} HTTP/1.1\r\nHost: w\r\n\r\n".encode())
                await asyncio.sleep(1.1)
            await asyncio.sleep(1.2)
            seconds = [s for s in dp.stats.window.window(time.time() + 1, 20)
                       if s["second"] >= int(start)]
            twos = sum(s["requests"]["2xx"] for s in seconds)
            fours = sum(s["requests"]["4xx"] for s in seconds)
            denials = sum(s["denials"] for s in seconds)
            assert (twos, fours, denials) == (6, 3, 3), seconds
            assert sum(sum(s["latency_buckets"]) for s in seconds) == 9
            assert len([s for s in seconds if s["requests"]["2xx"]]) >= 2  # spread, per second

    asyncio.run(scenario())


def test_a_tcp_connection_refused_by_rbac_is_a_denial_in_the_window(
        tmp_path: Path, backend: Backend) -> None:
    import time

    from proxy_runtime.config import model as pc
    from proxy_runtime.config import snapshot_to_json

    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            snap = pc.Snapshot(inbound=pc.Inbound(
                service="db", namespace="data", default_deny=True, listeners=(
                    pc.InboundListener(port=port, local_address=f"127.0.0.1:{backend.port}",
                                       protocol="tcp", mtls_mode="DISABLE",
                                       bind_address="127.0.0.1"),)))
            assert isinstance(await dp.apply(snapshot_to_json(snap)), Ack)
            await asyncio.sleep(0.3)
            for _ in range(2):
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(b"hello")
                    assert s.recv(10) == b""  # closed: refused by the network RBAC filter
            await asyncio.sleep(2.2)
            seconds = dp.stats.window.window(time.time() + 1, 10)
            assert sum(s["denials"] for s in seconds) == 2, seconds

    asyncio.run(scenario())


def test_a_listener_on_a_port_in_use_is_nacked_with_envoys_reason(
        tmp_path: Path, backend: Backend) -> None:
    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            assert isinstance(await dp.apply(inbound_doc(port, backend.port)), Ack)
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                busy = taken.getsockname()[1]
                doc = inbound_doc(port, backend.port)
                doc["inbound"]["listeners"].append({**doc["inbound"]["listeners"][0],
                                                    "port": busy})
                result = await dp.apply(doc)
                assert isinstance(result, Nack), result
                assert "in use" in result.error.lower() or "bind" in result.error.lower(), result
            await wait_status(port, 200, "/old-config")

    asyncio.run(scenario())
