"""The canary shell on the fleet's event channel, with a real fleet server and ledger (SQLite):
a Push takes the ledger's word for proxies that already answered its version and waits for
events for the others (no task per push)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from fleet_helpers import Controller, run

from reconciler.fleet import DesiredSnapshot, LedgerEntry, ProxyState
from reconciler.revisions.canary import CanaryDeployer, _Internal, _Rollout
from reconciler.rollout import Acked, Push, RolloutEngine, RolloutSpec, Target
from reconciler.rollout.series import SeriesRecorder

IDS = ("web.shop-0", "web.shop-1", "web.shop-2")


def test_a_push_takes_the_ledgers_word_and_starts_no_task(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        # web.shop-0 ran v2 when the controller last saw it (the ledger, persisted)
        ctl.ledger_store.save([LedgerEntry("web.shop-0", "web", "shop", {}, "v2", "r2", None,
                                           "v2", None, ProxyState.DISCONNECTED, None, None)])
        fleet = await ctl.start()
        try:
            d = CanaryDeployer(fleet, ctl.audit, None, clock=lambda: datetime.now(UTC),  # type: ignore[arg-type]
                               now=lambda: 1000.0)
            spec = RolloutSpec("c" * 40, "b" * 40, tuple(Target(p, "web.shop", "v2", "v1")
                                                         for p in IDS))
            engine, _ = RolloutEngine.start(spec, 1000.0)
            r = _Rollout(7, "c" * 40, engine, {"v1": DesiredSnapshot("v1", "r1", b"{}"),
                                               "v2": DesiredSnapshot("v2", "r2", b"{}")},
                         1000.0, asyncio.get_running_loop().create_future(), SeriesRecorder())
            d.active = r
            tasks = len(asyncio.all_tasks())
            d._push(r, Push({"web.shop-0": "v2", "web.shop-1": "v2"},
                            ("web.shop-0", "web.shop-1"), "stage"))
            assert len(asyncio.all_tasks()) == tasks  # no waiter per push
            assert fleet.desired("web.shop-1") == DesiredSnapshot("v2", "r2", b"{}")
            queued = [d.events.get_nowait() for _ in range(d.events.qsize())]
            assert queued == [_Internal(Acked("web.shop-0", "v2", 1000.0), None, r)]
        finally:
            await ctl.stop()

    run(main())
