"""Fleet distribution, controller side: the mTLS fleet listener, the per-proxy ledger and
the join bootstrap. See docs/fleet.md.

    server = FleetServer(ca, audit, LedgerStore(engine), epoch=epoch, clock=clock)
    await server.start("0.0.0.0", 15012)
    server.set_desired({"web-1": DesiredSnapshot(version, revision, config_json)})
    outcomes = await server.wait_acked(["web-1"], version, timeout=30)
    server.ledger(); server.counts(); server.connected()

    boot = BootstrapServer(ca, tokens, audit, clock=clock, fleet_url=server.url)
    await boot.start("0.0.0.0", 15013)

Errors: the server raises nothing to its callers at run time (streams that misbehave are
refused, audited and closed); `LedgerStore` raises `reconciler.store.StoreUnavailable`
(temporary) when the database is away; constructors raise `ValueError` / `TypeError` for bad
arguments (permanent).
"""

from __future__ import annotations

from reconciler.fleet.bootstrap import BootstrapServer, BootstrapService, bootstrap_router
from reconciler.fleet.ledger import (
    AckOutcome,
    DesiredSnapshot,
    LedgerEntry,
    ProxyRecord,
    ProxyState,
)
from reconciler.fleet.ledger_store import LedgerStore
from reconciler.fleet.server import FleetServer, ProxyInfo

__all__ = [
    "AckOutcome",
    "BootstrapServer",
    "BootstrapService",
    "DesiredSnapshot",
    "FleetServer",
    "LedgerEntry",
    "LedgerStore",
    "ProxyInfo",
    "ProxyRecord",
    "ProxyState",
    "bootstrap_router",
]
