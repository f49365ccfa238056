"""Fleet distribution, controller side: the mTLS fleet listener, the per-proxy ledger and
the join bootstrap. See docs/fleet.md.

    server = FleetServer(ca, audit, LedgerStore(engine), epoch=epoch, clock=clock)
    events: asyncio.Queue[FleetEvent] = asyncio.Queue()
    server.subscribe(events)      # Connected, Acked, Nacked, Stats, Disconnected from now on
    await server.start("0.0.0.0", 15012)
    server.set_desired({"web-1": DesiredSnapshot(version, revision, config_json)})
    outcomes = await server.wait_for_acks({"web-1": version}, timeout=30)
    server.ledger(); server.counts(); server.connected(); server.outcome("web-1", version)

    boot = BootstrapServer(ca, tokens, audit, clock=clock, fleet_url=server.url)
    await boot.start("0.0.0.0", 15013)

Errors: the server raises nothing to its callers at run time (streams that misbehave are
refused, audited and closed); `LedgerStore` raises `reconciler.store.StoreUnavailable`
(temporary) when the database is away; constructors raise `ValueError` / `TypeError` for bad
arguments (permanent).
"""

from __future__ import annotations

from reconciler.fleet.bootstrap import BootstrapServer, BootstrapService, bootstrap_router
from reconciler.fleet.events import (
    Acked,
    AckTally,
    Connected,
    Disconnected,
    FleetEvent,
    Nacked,
    Stats,
    StatsWindow,
)
from reconciler.fleet.ledger import (
    AckOutcome,
    DesiredSnapshot,
    LedgerEntry,
    ProxyRecord,
    ProxyState,
)
from reconciler.fleet.ledger_store import LedgerStore
from reconciler.fleet.server import EventSink, FleetServer

__all__ = [
    "AckOutcome",
    "AckTally",
    "Acked",
    "BootstrapServer",
    "BootstrapService",
    "Connected",
    "DesiredSnapshot",
    "Disconnected",
    "EventSink",
    "FleetEvent",
    "FleetServer",
    "LedgerEntry",
    "LedgerStore",
    "Nacked",
    "ProxyRecord",
    "ProxyState",
    "Stats",
    "StatsWindow",
    "bootstrap_router",
]
