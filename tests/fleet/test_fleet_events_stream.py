"""The fleet server's one event channel over a real mTLS stream (a hand-driven proxy, so
that each message is ours): what subscribers see and in which order, hellos answered by a
subscriber, and waiting for ACKs ending when the server stops."""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import time
from pathlib import Path
from typing import Any

from fleet_helpers import Controller, desired, run, until
from websockets.asyncio.client import ClientConnection, connect

from proxy_runtime.protocol.fleet import SUBPROTOCOL
from reconciler.fleet import (
    Acked,
    Connected,
    Disconnected,
    FleetEvent,
    Nacked,
    Stats,
)


def _context(ctl: Controller, sd: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ctl.ca.trust_bundle_pem().decode())
    ctx.load_cert_chain(sd.path / "svid.pem", sd.path / "svid.key")
    return ctx


def _hello(running: str | None = None) -> str:
    return json.dumps({"type": "hello", "proxyId": "p1", "service": "web",
                       "namespace": "default", "labels": {"track": "canary"},
                       "runningVersion": running})


def _window(second: int, **change: Any) -> dict[str, Any]:
    return {"second": second, "requests": {"2xx": 5, "3xx": 0, "4xx": 0, "5xx": 1},
            "connection_failures": 0, "denials": 0, "latency_buckets": [6] + [0] * 13,
            "latency_sum_seconds": 0.006, **change}


async def _snapshot(ws: ClientConnection) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert doc["type"] == "snapshot"
    return doc


def _drain(q: asyncio.Queue[FleetEvent]) -> list[FleetEvent]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_subscribers_see_one_proxys_life_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        no_stats: asyncio.Queue[FleetEvent] = asyncio.Queue()
        fleet.subscribe(no_stats, stats=False)
        sd = ctl.enroll(tmp_path / "p", "web")
        try:
            async with connect(fleet.url, ssl=_context(ctl, sd),
                               subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
                await ws.send(_hello())
                await until(lambda: fleet.connected() == ["p1"], what="hello")
                good, bad = desired(1), desired(2)
                fleet.set_desired({"p1": good})
                snap = await _snapshot(ws)
                await ws.send(json.dumps({"type": "ack", "nonce": snap["nonce"],
                                          "version": good.version}))
                await ws.send(json.dumps({"type": "stats", "windows": [
                    _window(100), _window(101, latency_buckets=[1]), _window(102)]}))
                await until(lambda: len(ctl.stats) == 2, what="stats")
                fleet.set_desired({"p1": bad})
                snap = await _snapshot(ws)
                await ws.send(json.dumps({"type": "nack", "nonce": snap["nonce"],
                                          "version": bad.version, "error": "no such cluster"}))
                await until(lambda: fleet.outcome("p1", bad.version) is not None, what="nack")
            await until(lambda: fleet.connected() == [], what="disconnect")
            events = ctl.events()
            kinds = [type(e).__name__ for e in events]
            assert kinds == ["Connected", "Acked", "Stats", "Stats", "Nacked", "Disconnected"]
            hello = events[0]
            assert isinstance(hello, Connected)
            assert (hello.proxy_id, hello.service, hello.namespace) == ("p1", "web", "default")
            assert hello.labels == {"track": "canary"} and hello.running_version is None
            assert hello.spiffe_id == "spiffe://mesh.test/ns/default/sa/web"
            ack = events[1]
            assert isinstance(ack, Acked) and ack.version == good.version
            assert ack.seconds is not None and ack.seconds >= 0
            # stats are parsed at the edge; a window of the wrong shape is dropped and counted
            assert [(s.proxy_id, s.window.second, s.window.requests, s.source) for s in events[2:4]
                    if isinstance(s, Stats)] == [("p1", 100, (5, 0, 0, 1), "fleet"),
                                                 ("p1", 102, (5, 0, 0, 1), "fleet")]
            assert fleet.bad_stats_windows == 1
            assert events[4] == Nacked("p1", bad.version, "no such cluster", at=events[4].at)
            assert events[5] == Disconnected("p1", at=events[5].at)
            # each says when the server saw it (its clock), in order
            assert all(a.at <= b.at for a, b in itertools.pairwise(events))
            assert abs(events[0].at - time.time()) < 60
            # a subscriber without stats gets the rest, in the same order
            assert _drain(no_stats) == [e for e in events if not isinstance(e, Stats)]
        finally:
            await ctl.stop()

    run(main())


def test_unsubscribed_queues_get_nothing_more(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        q: asyncio.Queue[FleetEvent] = asyncio.Queue()
        fleet.subscribe(q)
        fleet.subscribe(q, stats=False)  # again: only changes what it gets, not twice
        sd = ctl.enroll(tmp_path / "p", "web")
        try:
            async with connect(fleet.url, ssl=_context(ctl, sd),
                               subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
                await ws.send(_hello())
                await until(lambda: fleet.connected() == ["p1"], what="hello")
                fleet.unsubscribe(q)
            await until(lambda: fleet.connected() == [], what="disconnect")
            await until(lambda: len(ctl.events()) == 2, what="disconnect event")
            assert [type(e).__name__ for e in _drain(q)] == ["Connected"]
        finally:
            await ctl.stop()

    run(main())


def test_a_proxy_waits_for_the_answer_to_its_hello(tmp_path: Path) -> None:
    """With `answers_hellos`, nothing is pushed before the subscriber answers; an answer for
    a stream that is gone is dropped (its successor gets its own answer)."""

    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start(answers_hellos=True)
        old = desired(1)
        fleet.set_desired({"p1": old})  # known to the ledger before it connects
        sd = ctl.enroll(tmp_path / "p", "web")
        try:
            async with connect(fleet.url, ssl=_context(ctl, sd),
                               subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
                await ws.send(_hello())
                await until(lambda: bool(ctl.hellos), what="hello")
                first = ctl.hellos[0]
                await asyncio.sleep(0.3)
                assert fleet.entry("p1").sent_nonce is None  # type: ignore[union-attr]
            await until(lambda: fleet.connected() == [], what="disconnect")
            async with connect(fleet.url, ssl=_context(ctl, sd),
                               subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
                await ws.send(_hello())
                await until(lambda: len(ctl.hellos) == 2, what="second hello")
                second = ctl.hellos[1]
                assert second.connection != first.connection
                fleet.answer_hello(first, desired(9))  # late, for the stream that is gone
                await asyncio.sleep(0.2)
                assert fleet.entry("p1").sent_nonce is None  # type: ignore[union-attr]
                assert fleet.desired("p1") == old
                fleet.answer_hello(second, None)  # "keep what the ledger has"
                snap = await _snapshot(ws)
                assert snap["version"] == old.version
        finally:
            await ctl.stop()

    run(main())


def test_waiting_for_acks_ends_when_the_server_stops(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        d = desired(1)
        fleet.set_desired({"p1": d})  # p1 never connects
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(fleet.wait_for_acks({"p1": d.version}, 30))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await ctl.stop()
        got = await asyncio.wait_for(waiting, 5)
        assert got["p1"].status == "timeout" and loop.time() - started < 10
        assert await fleet.wait_for_acks({}, 30) == {}

    run(main())
