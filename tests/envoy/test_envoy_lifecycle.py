"""The agent runs Envoy: restarts it with the last good config when it dies, Envoy keeps
serving when the agent dies, the control socket is private, the key never touches disk."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from pathlib import Path

import psutil
from envoy_harness import (
    Backend,
    envoy_plane,
    free_port,
    inbound_doc,
    needs_envoy,
    svid,
    wait_status,
)

from proxy_runtime.runtime import Ack

pytestmark = needs_envoy


def test_envoy_killed_is_restarted_with_the_last_good_config_within_2s(
        tmp_path: Path, backend: Backend) -> None:
    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            assert isinstance(await dp.apply(inbound_doc(port, backend.port)), Ack)
            await wait_status(port, 200)
            old = dp.supervisor.pid
            assert old is not None
            killed = time.monotonic()
            os.kill(old, signal.SIGKILL)
            await wait_status(port, 200, "/after", within=5.0)
            took = time.monotonic() - killed
            assert dp.supervisor.pid != old and dp.supervisor.starts == 2
            assert took < 2.0, f"serving again after {took:.2f} s"

    asyncio.run(scenario())


def test_the_agent_dies_envoy_keeps_serving_and_a_new_agent_adopts_it(
        tmp_path: Path, backend: Backend) -> None:
    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            assert isinstance(await dp.apply(inbound_doc(port, backend.port)), Ack)
            await wait_status(port, 200)
            envoy_pid = dp.supervisor.pid
            await dp.abandon()  # the agent is gone: no xDS server, no supervisor
            await asyncio.sleep(1.0)
            await wait_status(port, 200, "/agent-gone", within=1.0)
            # a new agent on the same state dir: adopts the running Envoy, pushes nothing new
            async with envoy_plane(tmp_path) as dp2:
                assert dp2.supervisor.adopted and dp2.supervisor.pid == envoy_pid
                await asyncio.wait_for(dp2.control.connected.wait(), 10.0)
                assert dp2.control.good is not None and dp2.control.good.version == dp.version
                await wait_status(port, 200, "/resumed", within=2.0)

    asyncio.run(scenario())


def test_private_socket_only_envoys_listeners_on_tcp_and_no_key_on_disk(
        tmp_path: Path, backend: Backend) -> None:
    async def scenario() -> None:
        port = free_port()
        ident = svid()
        async with envoy_plane(tmp_path) as dp:
            sock_dir = dp.socket_path.parent
            assert stat.S_IMODE(sock_dir.stat().st_mode) == 0o700
            assert stat.S_ISSOCK(dp.socket_path.stat().st_mode)
            assert stat.S_IMODE(dp.socket_path.stat().st_mode) == 0o600
            doc = inbound_doc(port, backend.port)
            doc["identity"] = ident
            doc["inbound"]["listeners"][0]["mtlsMode"] = "PERMISSIVE"
            result = await dp.apply(doc)
            assert isinstance(result, Ack), result
            await wait_status(port, 200)
            listening = {(c.laddr.ip, c.laddr.port) for c in
                         psutil.Process(dp.supervisor.pid).net_connections("inet")
                         if c.status == psutil.CONN_LISTEN}
            assert listening == {("127.0.0.1", port), ("127.0.0.1", dp.supervisor.admin_port)}
            key_body = "".join(ident["privateKeyPem"].splitlines()[1:-1])[:40].encode()
            for f in tmp_path.rglob("*"):
                if f.is_file():
                    data = f.read_bytes()
                    assert key_body not in data.replace(b"\n", b""), f"the key is in {f}"

    asyncio.run(scenario())


def test_a_renewed_certificate_reaches_envoy_over_sds_without_a_restart(
        tmp_path: Path, backend: Backend) -> None:
    import socket
    import ssl

    def served_id(port: int, bundle: str) -> str:
        ctx = ssl.create_default_context(cadata=bundle)
        ctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
                ctx.wrap_socket(raw) as tls:
            cert = tls.getpeercert()
        assert cert is not None
        return str(next(v for k, v in cert["subjectAltName"] if k == "URI"))

    async def scenario() -> None:
        port = free_port()
        first, second = svid("spiffe://meshcd.test/ns/shop/sa/web"), svid(
            "spiffe://meshcd.test/ns/shop/sa/web-renewed")
        async with envoy_plane(tmp_path) as dp:
            doc = inbound_doc(port, backend.port)
            doc["inbound"]["listeners"][0]["mtlsMode"] = "STRICT"
            assert isinstance(await dp.apply({**doc, "identity": first}), Ack)
            pid = dp.supervisor.pid
            for _ in range(40):  # the listener warms until its SDS secret arrived
                try:
                    got = await asyncio.to_thread(served_id, port, first["trustBundlePem"])
                    break
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)
            assert got == first["spiffeId"]
            # what the agent does after a renewal: the same config with the new identity
            assert isinstance(await dp.apply({**doc, "identity": second}), Ack)
            for _ in range(40):
                try:
                    got = await asyncio.to_thread(served_id, port, second["trustBundlePem"])
                except ssl.SSLError:  # still the old certificate, from the other CA
                    got = ""
                if got == second["spiffeId"]:
                    break
                await asyncio.sleep(0.05)
            assert got == second["spiffeId"] and dp.supervisor.pid == pid

    asyncio.run(scenario())


def test_drain_lets_the_request_in_flight_finish_then_stops_envoy(
        tmp_path: Path, backend: Backend) -> None:
    from envoy_harness import http, status_of

    from proxy_runtime.envoy.supervisor import active_requests

    assert active_requests("http.inbound_1.downstream_rq_active: 2\n"
                           "http.admin.downstream_rq_active: 1\nhttp.outbound.downstream_rq_active: 1\n") == 3

    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            assert isinstance(await dp.apply(inbound_doc(port, backend.port)), Ack)
            await wait_status(port, 200)
            pid = dp.supervisor.pid
            assert pid is not None
            slow = asyncio.create_task(asyncio.to_thread(
                http, port, b"GET /slow HTTP/1.1\r\nHost: w\r\n\r\n", 5.0))
            await asyncio.sleep(0.3)  # in flight at the backend
            started = time.monotonic()
            await dp.supervisor.drain(5.0)
            took = time.monotonic() - started
            response = await slow
            assert status_of(response) == 200 and b"/slow" in response
            assert 0.3 < took < 3.0, took
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    asyncio.run(scenario())


def test_an_envoy_you_run_yourself_on_the_agents_bootstrap(tmp_path: Path, backend: Backend) -> None:
    import subprocess

    from envoy_harness import ENVOY

    from proxy_runtime.envoy.dataplane import EnvoyDataPlane

    async def scenario() -> None:
        port = free_port()
        (tmp_path / "state").mkdir()
        dp = EnvoyDataPlane(tmp_path / "state", proxy_id="web-1", service="web.shop",
                            binary=None, run_dir=tmp_path / "run")
        await dp.start()
        assert dp.supervisor.pid is None  # the agent runs no Envoy
        command = dp.supervisor.command()
        assert command[0] == "envoy" and "--disable-hot-restart" in command
        own = subprocess.Popen([str(ENVOY), *command[1:]], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            assert isinstance(await dp.apply(inbound_doc(port, backend.port)), Ack)
            await wait_status(port, 200, "/mine")
            assert b"envoy_server_live" in await asyncio.to_thread(dp.prometheus_text)
            await dp.drain(1.0)  # the agent goes; your Envoy is yours: it keeps serving
            assert own.poll() is None
            await wait_status(port, 200, "/still-mine")
        finally:
            own.terminate()
            own.wait(10)

    asyncio.run(scenario())
