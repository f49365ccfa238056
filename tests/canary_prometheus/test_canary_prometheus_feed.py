"""The Prometheus feed's logic with a fake provider and an injected clock (no sockets, no
sleeps): what it reads, what it puts on the deployer's event queue, what it does when
Prometheus fails; and the deployer taking stats from one source only."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.analysis.prometheus import PrometheusError
from reconciler.fleet import Stats, StatsWindow
from reconciler.revisions.canary import CanaryDeployer, _Rollout
from reconciler.revisions.prometheus_feed import AUDIT_EVERY_S, PrometheusFeed
from reconciler.rollout import RolloutEngine, RolloutSpec, StatsReceived, Target
from reconciler.rollout.series import SeriesRecorder

COMMIT = "c" * 40
IDS = ("web.shop-1", "web.shop-0", "db.shop-0")


def window(second: int, ok: int = 10, e5: int = 0) -> dict[str, Any]:
    buckets = [0] * 14
    buckets[3] = ok + e5
    return {"second": second, "requests": {"2xx": ok, "3xx": 0, "4xx": 0, "5xx": e5},
            "connection_failures": 0, "denials": 0, "latency_buckets": buckets,
            "latency_sum_seconds": 0.01 * (ok + e5)}


class FakeProvider:
    display_url = "http://prometheus:9090"

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], float, float, float]] = []
        self.fail: Exception | None = None
        self.answer: dict[str, list[dict[str, Any]]] = {}

    def windows_by_proxy(self, proxy_ids: Sequence[str], start: float, end: float,
                         step: float = 1.0) -> dict[str, list[dict[str, Any]]]:
        self.calls.append((tuple(proxy_ids), start, end, step))
        if self.fail is not None:
            raise self.fail
        return self.answer


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def deployer_with_rollout(clock: Clock, started_at: float,
                          source: str = "prometheus") -> CanaryDeployer:
    """A real CanaryDeployer (no fleet, audit or store: only its inputs are used) with a
    running rollout of a real engine."""
    d = CanaryDeployer(None, None, None, clock=lambda: datetime.now(UTC),  # type: ignore[arg-type]
                       now=clock, stats_source=source)  # type: ignore[arg-type]
    spec = RolloutSpec(COMMIT, "b" * 40, tuple(Target(p, p.split("-")[0], "v2", "v1")
                                               for p in IDS))
    engine, _ = RolloutEngine.start(spec, started_at)
    d.active = _Rollout(7, COMMIT, engine, {}, started_at,
                        asyncio.get_running_loop().create_future(), SeriesRecorder())
    return d


def queued(d: CanaryDeployer) -> list[Any]:
    out = []
    while not d.events.empty():
        out.append(d.events.get_nowait())
    return out


def test_feed_reads_each_range_once_up_to_now_minus_lag() -> None:
    async def main() -> None:
        clock = Clock(1000.5)
        d = deployer_with_rollout(clock, started_at=990.3)
        prov = FakeProvider()
        audits: list[tuple[str, str, str, dict[str, Any]]] = []
        feed = PrometheusFeed(d, prov, audit=lambda *a: audits.append(a), interval_s=1,
                              lag_s=2.0, now=clock)
        assert d.stats_source == "prometheus"
        prov.answer = {"web.shop-0": [window(s) for s in range(990, 998)],
                       "db.shop-0": [window(997, e5=3), window(998)]}  # 998: not asked for
        assert await feed.poll() == 9
        # all the rollout's targets, from the rollout's start to now - lag, whole seconds
        assert prov.calls == [(tuple(sorted(IDS)), 990.0, 998.0, 1.0)]
        events = queued(d)  # on the queue the fleet's events take, marked as Prometheus's
        assert all(isinstance(e, Stats) and e.source == "prometheus" for e in events)
        assert [(e.proxy_id, e.window.second) for e in events] == (
            [("db.shop-0", 997)] + [("web.shop-0", s) for s in range(990, 998)])
        assert events[0].window.requests[3] == 3  # 5xx
        # the next poll reads on from there; nothing new yet: no query
        clock.t = 1000.9
        prov.answer = {}
        assert await feed.poll() == 0 and len(prov.calls) == 1
        clock.t = 1002.0
        prov.answer = {"web.shop-1": [window(998), window(999)]}
        assert await feed.poll() == 2
        assert prov.calls[-1][1:3] == (998.0, 1000.0)
        assert [e.window.second for e in queued(d)] == [998, 999]
        assert not audits
        # the rollout ends: the feed stops asking
        d.active = None
        clock.t = 1010.0
        assert await feed.poll() == 0 and len(prov.calls) == 2

    asyncio.run(main())


def test_prometheus_errors_are_audited_sparingly_and_the_range_is_read_again() -> None:
    async def main() -> None:
        clock = Clock(1000.0)
        d = deployer_with_rollout(clock, started_at=990.0)
        prov = FakeProvider()
        audits: list[tuple[str, str, str, dict[str, Any]]] = []
        feed = PrometheusFeed(d, prov, audit=lambda *a: audits.append(a), interval_s=1,
                              lag_s=2.0, now=clock)
        prov.fail = PrometheusError("cannot reach Prometheus at http://prometheus:9090: "
                                    "[Errno 111] Connection refused")
        assert await feed.poll() == 0  # no exception
        assert len(audits) == 1
        actor, kind, subject, data = audits[0]
        assert (actor, kind, subject) == ("controller", "analysis.source_error", COMMIT)
        assert data["error"].endswith("Connection refused") and data["stage"] == 1
        assert data["url"] == "http://prometheus:9090" and data["revision_id"] == 7
        for dt in (1, 10, AUDIT_EVERY_S - 2):  # same stage, within the minute: not again
            clock.t = 1000.0 + dt
            await feed.poll()
        assert len(audits) == 1 and feed.errors == 4
        clock.t = 1000.0 + AUDIT_EVERY_S + 1  # a minute later: again
        prov.fail = ValueError("an answer of an unexpected shape")
        await feed.poll()
        assert len(audits) == 2 and "unexpected shape" in audits[1][3]["error"]
        assert not queued(d)
        # Prometheus is back: the whole range since the last good read is read
        prov.fail = None
        prov.answer = {"web.shop-0": [window(990)]}
        assert await feed.poll() == 1
        assert prov.calls[-1][1] == 990.0 and prov.calls[-1][2] == float(int(clock.t - 2))

    asyncio.run(main())


def test_the_audit_log_failing_does_not_stop_the_feed() -> None:
    async def main() -> None:
        clock = Clock(1000.0)
        d = deployer_with_rollout(clock, started_at=990.0)
        prov = FakeProvider()
        prov.fail = PrometheusError("query refused (400): bad_data")

        def broken(*_a: Any) -> None:
            raise RuntimeError("database is locked")

        feed = PrometheusFeed(d, prov, audit=broken, lag_s=2.0, now=clock)
        assert await feed.poll() == 0 and feed.errors == 1

    asyncio.run(main())


def test_fleet_stats_are_ignored_when_the_source_is_prometheus() -> None:
    async def main() -> None:
        clock = Clock(1000.0)

        def stats(second: int, source: str = "fleet") -> Stats:
            return Stats("web.shop-0", StatsWindow.from_wire(window(second)), source,  # type: ignore[arg-type]
                         at=clock())

        # the fleet source (default): the stream is evidence, Prometheus windows are not
        d = deployer_with_rollout(clock, started_at=990.0, source="fleet")
        got = [d.engine_event(stats(995)), d.engine_event(stats(996, "prometheus"))]
        assert isinstance(got[0], StatsReceived) and got[0].window["second"] == 995
        assert got[1] is None
        with pytest.raises(ValueError, match="stats_source='prometheus'"):
            PrometheusFeed(d, FakeProvider(), audit=lambda *a: None, now=clock)
        # the Prometheus source: the other way round
        d = deployer_with_rollout(clock, started_at=990.0)
        PrometheusFeed(d, FakeProvider(), audit=lambda *a: None, now=clock)
        got = [d.engine_event(stats(997)), d.engine_event(stats(998, "prometheus"))]
        assert got[0] is None
        assert isinstance(got[1], StatsReceived) and got[1].window["second"] == 998
        assert d.status() is not None and d.status()["source"] == "prometheus"  # type: ignore[index]

    asyncio.run(main())


def test_windows_of_the_wrong_shape_are_dropped_and_counted() -> None:
    async def main() -> None:
        clock = Clock(1000.0)
        d = deployer_with_rollout(clock, started_at=990.0)
        prov = FakeProvider()
        feed = PrometheusFeed(d, prov, audit=lambda *a: None, lag_s=2.0, now=clock)
        short = {**window(991), "latency_buckets": [0, 1]}
        negative = {**window(992), "denials": -1}
        prov.answer = {"web.shop-0": [window(990), short, negative, {"second": 993}]}
        assert await feed.poll() == 1 and feed.bad_windows == 3
        assert [e.window.second for e in queued(d)] == [990]

    asyncio.run(main())


def test_the_loop_polls_every_interval_and_stops() -> None:
    async def main() -> None:
        clock = Clock(1000.0)
        d = deployer_with_rollout(clock, started_at=990.0)
        prov = FakeProvider()
        feed = PrometheusFeed(d, prov, audit=lambda *a: None, interval_s=0.01, lag_s=2.0,
                              now=clock)
        feed.start()
        polled = asyncio.Event()

        async def advance() -> None:  # move the injected clock until a second read happened
            while len(prov.calls) < 2:
                clock.t += 1
                await asyncio.sleep(0.01)
            polled.set()

        await asyncio.wait_for(asyncio.gather(advance(), polled.wait()), 5)
        await feed.stop()
        n = len(prov.calls)
        clock.t += 10
        await asyncio.sleep(0.05)
        assert len(prov.calls) == n  # stopped

    asyncio.run(main())


def test_fleet_events_reach_the_engine_at_the_time_they_happened() -> None:
    """A fleet event taken off the queue late (the consumer was storing the previous
    command's state) keeps its own time: the bake starts at the last ACK, and windows of the
    seconds after it count (seen in the healthy e2e test: stamped when read, stages went
    Inconclusive for want of the first second's requests)."""

    async def main() -> None:
        from reconciler.fleet import Acked as FleetAcked
        from reconciler.fleet import Disconnected as FleetDisconnected
        from reconciler.rollout import Acked, Disconnected

        clock = Clock(2000.0)  # "now", when the consumer reads the events
        d = deployer_with_rollout(clock, started_at=990.0, source="fleet")
        got = d.engine_event(FleetAcked("web.shop-0", "v2", 0.01, at=1000.5))
        assert got == Acked("web.shop-0", "v2", 1000.5)
        got = d.engine_event(FleetDisconnected("web.shop-1", at=1001.0))
        assert got == Disconnected("web.shop-1", 1001.0)
        stats = Stats("web.shop-0", StatsWindow.from_wire(window(1001)), at=1002.0)
        got = d.engine_event(stats)
        assert isinstance(got, StatsReceived) and got.now == 1002.0

    asyncio.run(main())
