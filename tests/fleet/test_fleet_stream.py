"""The fleet stream end to end over real mTLS on 127.0.0.1: push, ACK, NACK, latest wins,
reconnects, stats."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fleet_helpers import Controller, desired, run, start_agent, until

from reconciler.fleet import Acked, Connected, FleetEvent, ProxyState, StatsWindow


def test_push_ack_and_ledger(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        sd = ctl.enroll(tmp_path / "p1", "web", "shop")
        a = await start_agent(sd, fleet.url, "web-1", "web", "shop", labels={"track": "stable"})
        try:
            await until(lambda: fleet.connected() == ["web-1"], what="connect")
            assert ctl.hellos[0].spiffe_id == "spiffe://mesh.test/ns/shop/sa/web"
            assert ctl.hellos[0].labels == {"track": "stable"}
            d = desired(1)
            fleet.set_desired({"web-1": d})
            out = await fleet.wait_for_acks({"web-1": d.version}, timeout=10)
            assert out["web-1"].status == "acked"
            assert out["web-1"].seconds is not None and out["web-1"].seconds >= 0
            entry = fleet.entry("web-1")
            assert entry is not None
            assert entry.state is ProxyState.SYNCED
            assert entry.acked_version == d.version and entry.desired_revision == "rev1"
            assert entry.labels == {"track": "stable"}
            # the proxy runs the config with its own identity injected
            dump = a.runtime.config_dump()
            assert dump["revision"] == "rev1"
            assert dump["snapshot"]["identity"]["spiffeId"] == "spiffe://mesh.test/ns/shop/sa/web"
            assert dump["snapshot"]["telemetry"]["statsIntervalSeconds"] == 1.0
            assert a.agent.config_version == d.version
            # stats arrive every interval
            await until(lambda: any(pid == "web-1" for pid, _ in ctl.stats), what="stats")
            _pid, window = ctl.stats[0]  # parsed once, at the edge
            assert isinstance(window, StatsWindow) and window.second > 0
            assert len(window.latency_buckets) == 14 and len(window.requests) == 4
            # same desired again: not pushed again (the nonce stays)
            nonce = fleet.entry("web-1").sent_nonce  # type: ignore[union-attr]
            fleet.set_desired({"web-1": desired(1)})
            await fleet.wait_for_acks({"web-1": d.version}, timeout=5)
            assert fleet.entry("web-1").sent_nonce == nonce  # type: ignore[union-attr]
            assert fleet.counts() == {"SYNCED": 1, "STALE": 0, "NACKED": 0, "DISCONNECTED": 0}
        finally:
            await a.stop()
            await ctl.stop()
        assert "proxy.connected" in ctl.kinds() and "proxy.disconnected" in ctl.kinds()
        # persisted: a new controller on the same database knows the proxy's acked version
        restored = {e.proxy_id: e for e in ctl.ledger_store.load()}
        assert restored["web-1"].acked_version == d.version
        assert restored["web-1"].state is ProxyState.DISCONNECTED
        assert ctl.audit.verify().ok

    run(main())


def test_nack_keeps_old_config(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        a = await start_agent(ctl.enroll(tmp_path / "p", "web"), fleet.url, "web-1", "web")
        try:
            good = desired(1)
            fleet.set_desired({"web-1": good})
            assert (await fleet.wait_for_acks({"web-1": good.version}, 10))["web-1"].status == "acked"
            bad = desired(2, broken=True)
            fleet.set_desired({"web-1": bad})
            out = await fleet.wait_for_acks({"web-1": bad.version}, 10)
            assert out["web-1"].status == "nacked"
            assert "no-such-cluster" in (out["web-1"].error or "")
            entry = fleet.entry("web-1")
            assert entry is not None and entry.state is ProxyState.NACKED
            assert entry.acked_version == good.version
            assert "no-such-cluster" in (entry.last_error or "")
            assert a.runtime.config_dump()["revision"] == "rev1"  # still the old config
            assert a.agent.config_version == good.version
            # a fixed config after the NACK goes through
            fixed = desired(3)
            fleet.set_desired({"web-1": fixed})
            assert (await fleet.wait_for_acks({"web-1": fixed.version}, 10))["web-1"].status == "acked"
            assert fleet.entry("web-1").state is ProxyState.SYNCED  # type: ignore[union-attr]
            assert fleet.entry("web-1").last_error is None  # type: ignore[union-attr]
        finally:
            await a.stop()
            await ctl.stop()

    run(main())


def test_latest_wins_under_rapid_updates(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        a = await start_agent(ctl.enroll(tmp_path / "p", "web"), fleet.url, "web-1", "web")
        applied: list[str] = []
        real_apply = a.runtime.apply

        async def slow_apply(doc):  # type: ignore[no-untyped-def]
            import asyncio

            await asyncio.sleep(0.05)  # so that newer desires pile up behind the in-flight one
            result = await real_apply(doc)
            applied.append(doc["revision"])
            return result

        a.runtime.apply = slow_apply  # type: ignore[method-assign]
        try:
            await until(lambda: fleet.connected() == ["web-1"])
            acks: list[tuple[str, ProxyState]] = []
            events: asyncio.Queue[FleetEvent] = asyncio.Queue()
            fleet.subscribe(events, stats=False)

            async def record_acks() -> None:  # the ledger's state as each ACK event is taken
                while True:
                    ev = await events.get()
                    if isinstance(ev, Acked):
                        acks.append((ev.version, fleet.entry(ev.proxy_id).state))  # type: ignore[union-attr]

            recorder = asyncio.create_task(record_acks())
            versions = [desired(i) for i in range(1, 21)]
            fleet.set_desired({"web-1": versions[0]})
            await until(lambda: fleet.entry("web-1").sent_nonce is not None, what="first push")  # type: ignore[union-attr]
            for d in versions[1:]:  # all while the first is being applied
                fleet.set_desired({"web-1": d})
                assert fleet.entry("web-1").state is ProxyState.STALE  # type: ignore[union-attr]
            last = versions[-1]
            out = await fleet.wait_for_acks({"web-1": last.version}, 10)
            assert out["web-1"].status == "acked"
            assert a.agent.config_version == last.version
            # one in flight, then only the newest: the 18 in between were never sent
            assert applied == ["rev1", "rev20"]
            # the ACK of the first nonce recorded v1 and left the proxy STALE (v20 desired)
            await until(lambda: len(acks) == 2, what="both ACK events")
            assert acks == [(versions[0].version, ProxyState.STALE), (last.version, ProxyState.SYNCED)]
            entry = fleet.entry("web-1")
            assert entry is not None and entry.acked_version == last.version
            recorder.cancel()
        finally:
            await a.stop()
            await ctl.stop()

    run(main())


def test_reconnect_after_controller_restart(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        port = fleet.bound_port
        a = await start_agent(ctl.enroll(tmp_path / "p", "web"), fleet.url, "web-1", "web")
        try:
            d = desired(1)
            fleet.set_desired({"web-1": d})
            assert (await fleet.wait_for_acks({"web-1": d.version}, 10))["web-1"].status == "acked"
            await ctl.stop()
            await until(lambda: not a.agent.connected.is_set(), what="agent notices")
            # controller away: the proxy keeps serving its config (static stability)
            assert a.runtime.active is not None and a.runtime.config_dump()["revision"] == "rev1"
            # a new controller (next epoch) on the same port and database
            ctl2 = Controller(tmp_path / "ctl", epoch=2)
            fleet2 = await ctl2.start(port=port)
            try:
                before = fleet2.entry("web-1")
                assert before is not None and before.state is ProxyState.DISCONNECTED
                assert before.acked_version == d.version
                await until(lambda: fleet2.connected() == ["web-1"], what="reconnect")
                # the agent reported its running version: nothing to push
                assert ctl2.hellos[-1].running_version == d.version
                fleet2.set_desired({"web-1": d})
                entry = fleet2.entry("web-1")
                assert entry is not None and entry.state is ProxyState.SYNCED
                assert entry.sent_nonce is None  # not touched
                d2 = desired(2)
                fleet2.set_desired({"web-1": d2})
                out = await fleet2.wait_for_acks({"web-1": d2.version}, 10)
                assert out["web-1"].status == "acked"
                assert a.agent.epoch == 2
            finally:
                await ctl2.stop()
        finally:
            await a.stop()

    run(main())


def test_uvloop_controller_and_agent(tmp_path: Path) -> None:
    """`meshcd serve` and the proxies may run on uvloop: the same stream, TLS refusals too."""

    async def main() -> None:
        import ssl

        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        a = await start_agent(ctl.enroll(tmp_path / "p", "web"), fleet.url, "web-1", "web")
        try:
            d = desired(1)
            fleet.set_desired({"web-1": d})
            assert (await fleet.wait_for_acks({"web-1": d.version}, 10))["web-1"].status == "acked"
            assert a.runtime.config_dump()["revision"] == "rev1"
            # a client without a certificate is refused in the handshake, and audited
            import asyncio

            ctx = ssl.create_default_context(cadata=ctl.ca.trust_bundle_pem().decode())
            try:
                r, w = await asyncio.open_connection("127.0.0.1", fleet.bound_port, ssl=ctx)
                await r.read()  # TLS 1.3: the refusal arrives after the client's handshake
                w.close()
            except (OSError, ssl.SSLError):
                pass
            await until(lambda: bool(ctl.records("fleet.refused")), what="refusal audited")
            # stopping the controller closes the stream: the agent notices, the ledger says so
            await ctl.stop()
            await until(lambda: not a.agent.connected.is_set(), what="agent sees the close")
            assert fleet.entry("web-1").state is ProxyState.DISCONNECTED  # type: ignore[union-attr]
            assert "proxy.disconnected" in ctl.kinds()
        finally:
            await a.stop()
            await ctl.stop()

    run(main(), uv=True)


def _outbound_desired(backend_port: int, n: int):  # type: ignore[no-untyped-def]
    import json as _json

    from proxy_runtime.config import parse_snapshot, snapshot_to_json
    from proxy_runtime.protocol.canonical import compute_version
    from reconciler.fleet import DesiredSnapshot

    doc = snapshot_to_json(parse_snapshot({
        "outbound": {"port": 0, "bindAddress": "127.0.0.1", "virtualHosts": [{
            "name": "svc", "domains": ["svc"],
            "routes": [{"name": "r", "match": {}, "timeoutMs": 1000 + n,
                        "clusters": [{"cluster": "app", "weight": 1}]}]}]},
        "clusters": [{"name": "app", "endpoints": [{"address": f"127.0.0.1:{backend_port}"}]}],
    }))
    return DesiredSnapshot(compute_version(doc), f"rev{n}", _json.dumps(doc).encode())


def test_controller_away_under_load_no_failed_requests(tmp_path: Path) -> None:
    """Static stability: traffic through the proxy while the controller goes away and comes
    back (with a new config) sees no failed request."""

    async def main() -> None:
        import asyncio

        async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while await reader.readuntil(b"\r\n\r\n"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        backend = await asyncio.start_server(app, "127.0.0.1", 0)
        bport = backend.sockets[0].getsockname()[1]
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        port = fleet.bound_port
        a = await start_agent(ctl.enroll(tmp_path / "p", "web"), fleet.url, "web-1", "web")
        results = {"ok": 0, "failed": 0}
        stop = asyncio.Event()

        async def client() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
            while not stop.is_set():
                writer.write(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
                results["ok" if head.startswith(b"HTTP/1.1 200") else "failed"] += 1
            writer.close()

        try:
            d1 = _outbound_desired(bport, 1)
            fleet.set_desired({"web-1": d1})
            assert (await fleet.wait_for_acks({"web-1": d1.version}, 10))["web-1"].status == "acked"
            proxy_port = a.runtime.port_of("outbound", 0)
            assert proxy_port
            clients = [asyncio.create_task(client()) for _ in range(4)]
            await asyncio.sleep(0.3)
            await ctl.stop()  # the controller goes away
            await asyncio.sleep(1.5)
            during = results["ok"]
            ctl2 = Controller(tmp_path / "ctl", epoch=2)
            fleet2 = await ctl2.start(port=port)
            try:
                await until(lambda: fleet2.connected() == ["web-1"], what="reconnect")
                d2 = _outbound_desired(bport, 2)
                fleet2.set_desired({"web-1": d2})
                assert (await fleet2.wait_for_acks({"web-1": d2.version}, 10))["web-1"].status == "acked"
                await asyncio.sleep(0.3)
                stop.set()
                await asyncio.gather(*clients)
            finally:
                await ctl2.stop()
            assert results["failed"] == 0
            assert during > 0 and results["ok"] > during  # traffic flowed throughout
        finally:
            stop.set()
            await a.stop()
            backend.close()

    run(main())


def test_a_hello_answer_older_than_set_desired_is_dropped(tmp_path: Path) -> None:
    """The controller answers a hello with a render of what is deployed, in a thread; if a
    deploy names the proxy meanwhile, the deploy wins (a stale answer would put the proxy back
    on the revision being replaced, and nothing would correct it)."""

    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start(answers_hellos=True)
        gate = asyncio.Event()
        old, new = desired(1), desired(2)
        hellos: asyncio.Queue[FleetEvent] = asyncio.Queue()
        fleet.subscribe(hellos, stats=False)

        async def slow_answers() -> None:  # what the controller does, slowly
            while True:
                ev = await hellos.get()
                if isinstance(ev, Connected):
                    await gate.wait()
                    fleet.answer_hello(ev, old)

        answering = asyncio.create_task(slow_answers())
        sd = ctl.enroll(tmp_path / "p", "web")
        a = await start_agent(sd, fleet.url, "web-1", "web")
        try:
            await until(lambda: fleet.connected() == ["web-1"], what="connect")
            fleet.set_desired({"web-1": new})
            assert (await fleet.wait_for_acks({"web-1": new.version}, 10))["web-1"].status == "acked"
            gate.set()
            await asyncio.sleep(0.3)
            assert fleet.desired("web-1") == new
            assert a.agent.config_version == new.version
            # with no set_desired in between, the hello's answer is what the proxy gets
            await a.stop()
            gate.clear()
            a = await start_agent(sd, fleet.url, "web-1", "web")
            await until(lambda: fleet.connected() == ["web-1"], what="reconnect")
            gate.set()
            out = await fleet.wait_for_acks({"web-1": old.version}, 10)
            assert out["web-1"].status == "acked" and fleet.desired("web-1") == old
        finally:
            answering.cancel()
            await a.stop()
            await ctl.stop()

    run(main())
