"""Streams the fleet listener refuses (and audits), and snapshots the agent refuses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from datetime import timedelta
from pathlib import Path

import pytest
from fleet_helpers import TD, Controller, desired, now, run, start_agent, until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from proxy_runtime.agent.identity import StateDir, make_csr, new_key
from proxy_runtime.protocol.fleet import SUBPROTOCOL
from reconciler.ca import CertificateAuthority, spiffe_id
from reconciler.fleet import ProxyState


def _context(ctl: Controller, sd: StateDir | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ctl.ca.trust_bundle_pem().decode())
    if sd is not None:
        ctx.load_cert_chain(sd.path / "svid.pem", sd.path / "svid.key")
    return ctx


async def _try_stream(ctl: Controller, sd: StateDir | None, hello: dict[str, object] | None,
                      path: str = "/fleet", raw: str | None = None) -> list[str]:
    """Connect, send a hello (or `raw`), return what the server sent before closing."""
    assert ctl.fleet is not None
    url = f"wss://127.0.0.1:{ctl.fleet.bound_port}{path}"
    got: list[str] = []
    try:
        async with connect(url, ssl=_context(ctl, sd), subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                           open_timeout=5) as ws:
            with contextlib.suppress(ConnectionClosed):  # the server may have refused already
                await ws.send(raw if raw is not None else json.dumps(hello))
            async for frame in ws:
                got.append(str(frame))
    except (ConnectionClosed, InvalidHandshake, OSError, ssl.SSLError, TimeoutError):
        pass
    return got


def _hello(service: str = "web", namespace: str = "default", pid: str = "p1") -> dict[str, object]:
    return {"type": "hello", "proxyId": pid, "service": service, "namespace": namespace,
            "labels": {}, "runningVersion": None}


def _refusals(ctl: Controller) -> list[dict[str, object]]:
    return [r.data for r in ctl.records("fleet.refused")]


@pytest.mark.parametrize("case", ["no-cert", "other-ca", "expired"])
def test_tls_refusals_are_audited(tmp_path: Path, case: str) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl", ca_created=now() - timedelta(days=3))
        await ctl.start()
        try:
            if case == "no-cert":
                sd = None
            elif case == "other-ca":
                other = CertificateAuthority.load_or_create(tmp_path / "other", TD, now=now())
                sd = StateDir(tmp_path / "p")
                key = new_key()
                chain = other.issue_svid(make_csr(key, "web"), spiffe_id(TD, "default", "web"), now=now())
                sd.save_identity(key, chain.decode(), other.trust_bundle_pem().decode())
            else:
                sd = ctl.enroll(tmp_path / "p", "web", at=now() - timedelta(days=2),
                                ttl=timedelta(hours=1))
            got = await _try_stream(ctl, sd, _hello())
            assert got == []  # no stream: nothing but the TLS alert
            assert ctl.fleet is not None and ctl.fleet.connected() == []
            await until(lambda: bool(_refusals(ctl)), what="audit")
        finally:
            await ctl.stop()
        data = _refusals(ctl)[0]
        assert data["stage"] == "tls"
        reason = str(data["reason"]).lower()
        expected = {"no-cert": "certificate", "other-ca": "certificate", "expired": "expired"}[case]
        assert expected in reason, reason
        assert "proxy.connected" not in ctl.kinds()

    run(main())


def test_identity_mismatch_is_refused_and_audited(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        await ctl.start()
        try:
            sd = ctl.enroll(tmp_path / "p", "web", "shop")
            got = await _try_stream(ctl, sd, _hello(service="payments", namespace="shop"))
            assert len(got) == 1 and json.loads(got[0])["type"] == "error"
            assert "identity mismatch" in json.loads(got[0])["reason"]
            got = await _try_stream(ctl, sd, _hello(service="web", namespace="prod"))
            assert "identity mismatch" in json.loads(got[0])["reason"]
            assert ctl.fleet is not None and ctl.fleet.entry("p1") is None
            # the same certificate with an honest hello is accepted
            a = await start_agent(sd, ctl.fleet.url, "p1", "web", "shop")
            await until(lambda: ctl.fleet.connected() == ["p1"])  # type: ignore[union-attr]
            await a.stop()
        finally:
            await ctl.stop()
        refusals = _refusals(ctl)
        assert len(refusals) == 2
        assert refusals[0]["spiffe_id"] == "spiffe://mesh.test/ns/shop/sa/web"
        assert "payments" in str(refusals[0]["reason"])

    run(main())


@pytest.mark.parametrize("raw, expect", [
    ("not json", "not valid JSON"),
    ('{"type": "ack", "nonce": "1", "version": "v"}', "first message must be hello"),
    ('{"type": "hello", "proxyId": "p1", "service": "web", "namespace": "default", "x": 1}',
     "unknown field"),
    ('{"type": "hello", "proxyId": 5, "service": "web", "namespace": "default"}', "must be a string"),
    ('{"type": "snapshot"}', "unexpected message type"),
    ("[1, 2]", "JSON object"),
])
def test_bad_first_messages(tmp_path: Path, raw: str, expect: str) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        await ctl.start()
        try:
            sd = ctl.enroll(tmp_path / "p", "web")
            got = await _try_stream(ctl, sd, None, raw=raw)
            assert len(got) == 1
            assert expect in json.loads(got[0])["reason"]
        finally:
            await ctl.stop()
        assert expect in str(_refusals(ctl)[0]["reason"])

    run(main())


def test_wrong_path_and_bad_message_after_hello(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        await ctl.start()
        try:
            sd = ctl.enroll(tmp_path / "p", "web")
            got = await _try_stream(ctl, sd, _hello(), path="/other")
            assert "wrong path" in json.loads(got[0])["reason"]
            # a valid hello, then garbage: refused, and the proxy shows DISCONNECTED
            assert ctl.fleet is not None
            url = ctl.fleet.url
            async with connect(url, ssl=_context(ctl, sd), subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
                await ws.send(json.dumps(_hello()))
                await until(lambda: ctl.fleet.connected() == ["p1"])  # type: ignore[union-attr]
                await ws.send(json.dumps({"type": "hello", "proxyId": "p1", "service": "web",
                                          "namespace": "default"}))
                frames: list[str] = []
                with contextlib.suppress(ConnectionClosed):
                    async for f in ws:
                        frames.append(str(f))
            assert "unexpected hello after hello" in json.loads(frames[0])["reason"]
            await until(lambda: ctl.fleet.entry("p1").state is ProxyState.DISCONNECTED)  # type: ignore[union-attr]
        finally:
            await ctl.stop()

    run(main())


def test_oversized_frame_closes_the_stream(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        await ctl.start()
        try:
            sd = ctl.enroll(tmp_path / "p", "web")
            assert ctl.fleet is not None
            async with connect(ctl.fleet.url, ssl=_context(ctl, sd), subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                               max_size=None) as ws:
                await ws.send(json.dumps(_hello()))
                await until(lambda: ctl.fleet.connected() == ["p1"])  # type: ignore[union-attr]
                with pytest.raises(ConnectionClosed):
                    await ws.send("x" * (2 * 1024 * 1024))
                    await asyncio.wait_for(ws.recv(), 5)
            await until(lambda: ctl.fleet.connected() == [])  # type: ignore[union-attr]
        finally:
            await ctl.stop()

    run(main())


def test_agent_refuses_an_older_epoch(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl", epoch=5)
        fleet = await ctl.start()
        port = fleet.bound_port
        sd = ctl.enroll(tmp_path / "p", "web")
        a = await start_agent(sd, fleet.url, "web-1", "web")
        try:
            d1 = desired(1)
            fleet.set_desired({"web-1": d1})
            assert (await fleet.wait_for_acks({"web-1": d1.version}, 10))["web-1"].status == "acked"
            assert a.agent.epoch == 5
            await ctl.stop()
            # a deposed leader (epoch 3) comes back on the same address
            old = Controller(tmp_path / "ctl", epoch=3)
            fleet_old = await old.start(port=port)
            try:
                await until(lambda: fleet_old.connected() == ["web-1"], what="reconnect")
                d2 = desired(2)
                fleet_old.set_desired({"web-1": d2})
                out = await fleet_old.wait_for_acks({"web-1": d2.version}, 10)
                assert out["web-1"].status == "nacked"
                assert "stale epoch 3" in (out["web-1"].error or "")
                assert fleet_old.entry("web-1").state is ProxyState.NACKED  # type: ignore[union-attr]
                assert a.agent.config_version == d1.version
                assert a.runtime.config_dump()["revision"] == "rev1"
            finally:
                await old.stop()
            # the epoch survives an agent restart (it is in the state dir)
            assert StateDir(tmp_path / "p").load_state().epoch == 5
        finally:
            await a.stop()

    run(main())


def test_agent_refuses_a_config_that_does_not_hash_to_its_version(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        a = await start_agent(ctl.enroll(tmp_path / "p", "web"), fleet.url, "web-1", "web")
        try:
            good = desired(1)
            lie = type(good)(desired(2).version, "rev-lie", good.config_json)
            fleet.set_desired({"web-1": lie})
            out = await fleet.wait_for_acks({"web-1": lie.version}, 10)
            assert out["web-1"].status == "nacked"
            assert "version mismatch" in (out["web-1"].error or "")
            assert a.runtime.active is None
        finally:
            await a.stop()
            await ctl.stop()

    run(main())


def test_a_stream_that_stops_answering_pings_is_closed(tmp_path: Path) -> None:
    """The heartbeat: one keepalive loop pings every stream; no pong, no stream."""

    async def main() -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start(ping_interval=0.2, ping_timeout=0.4)
        sd = ctl.enroll(tmp_path / "p", "web")
        live = await start_agent(sd, fleet.url, "live", "web")  # answers pings itself
        loop = asyncio.get_running_loop()
        ws = ClientProtocol(parse_uri(fleet.url), subprotocols=[SUBPROTOCOL])  # type: ignore[list-item]
        got = asyncio.Event()

        class Mute(asyncio.Protocol):
            """Opens the stream, says hello, then never reads again (so never pongs)."""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport
                ws.send_request(ws.connect())
                for d in ws.data_to_send():
                    transport.write(d)  # type: ignore[attr-defined]

            def data_received(self, data: bytes) -> None:
                if got.is_set():
                    return
                ws.receive_data(data)
                ws.events_received()
                ws.send_text(json.dumps(_hello(pid="mute")).encode())
                for d in ws.data_to_send():
                    self.t.write(d)  # type: ignore[attr-defined]
                got.set()

        transport, _ = await loop.create_connection(Mute, "127.0.0.1", fleet.bound_port,
                                                    ssl=_context(ctl, sd), server_hostname="127.0.0.1")
        try:
            await until(lambda: "mute" in fleet.connected(), what="mute connects")
            await until(lambda: "mute" not in fleet.connected(), what="mute closed")
            assert fleet.entry("mute").state is ProxyState.DISCONNECTED  # type: ignore[union-attr]
            await asyncio.sleep(1.0)  # several ping rounds: the live one stays
            assert "live" in fleet.connected()
        finally:
            transport.abort()
            await live.stop()
            await ctl.stop()

    run(main())
