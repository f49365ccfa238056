"""Helpers of the fleet tests: configs, a controller (fleet + bootstrap servers on one
database), agents over real runtimes, and a way to run async tests without plugins."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from proxy_runtime.agent.client import FleetAgent
from proxy_runtime.agent.identity import StateDir, make_csr, new_key
from proxy_runtime.config import parse_snapshot, snapshot_to_json
from proxy_runtime.protocol.canonical import compute_version
from proxy_runtime.runtime import ProxyRuntime
from reconciler.audit import AuditLog
from reconciler.ca import CertificateAuthority, JoinTokens, spiffe_id
from reconciler.fleet import (
    BootstrapServer,
    Connected,
    DesiredSnapshot,
    FleetEvent,
    FleetServer,
    LedgerStore,
    Stats,
    StatsWindow,
)
from reconciler.store import open_engine, sqlite_url

TD = "mesh.test"
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 60.0, *, uv: bool = False) -> T:
    """Run a test coroutine on a fresh asyncio (or uvloop) loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    if uv:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(bounded())
    return asyncio.run(bounded())


def now() -> datetime:
    return datetime.now(UTC)


def config(n: float, *, broken: bool = False) -> dict[str, Any]:
    """A valid snapshot (identity-less) in normal form; `n` makes each one different."""
    doc: dict[str, Any] = {"telemetry": {"statsIntervalSeconds": float(n)}}
    out = snapshot_to_json(parse_snapshot(doc))
    if broken:  # valid JSON and a valid shape, refused by the proxy's compiler
        out["tcp"] = [{"port": 0, "cluster": "no-such-cluster"}]
        out["version"] = compute_version(out)
    return out


def desired(n: float, *, revision: str = "", broken: bool = False) -> DesiredSnapshot:
    doc = config(n, broken=broken)
    return DesiredSnapshot(compute_version(doc), revision or f"rev{n}",
                           json.dumps(doc, separators=(",", ":")).encode())


async def until(pred: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Controller:
    data_dir: Path
    epoch: int = 1
    ca_created: datetime | None = None
    ca: CertificateAuthority = field(init=False)
    audit: AuditLog = field(init=False)
    tokens: JoinTokens = field(init=False)
    ledger_store: LedgerStore = field(init=False)
    fleet: FleetServer | None = None
    boot: BootstrapServer | None = None
    queue: asyncio.Queue[FleetEvent] | None = None  # subscribed to the fleet server
    seen: list[FleetEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ca = CertificateAuthority.load_or_create(self.data_dir, TD,
                                                  now=self.ca_created or now())
        engine = open_engine(sqlite_url(self.data_dir))
        self.audit = AuditLog(engine)
        self.tokens = JoinTokens(engine)
        self.ledger_store = LedgerStore(engine)

    async def start(self, port: int = 0, **kwargs: Any) -> FleetServer:
        self.fleet = FleetServer(self.ca, self.audit, self.ledger_store, epoch=self.epoch,
                                 clock=now, flush_interval=0.05, **kwargs)
        self.queue = asyncio.Queue()
        self.fleet.subscribe(self.queue)
        await self.fleet.start("127.0.0.1", port)
        return self.fleet

    def events(self) -> list[FleetEvent]:
        """Every event the fleet server published so far, in order."""
        while self.queue is not None and not self.queue.empty():
            self.seen.append(self.queue.get_nowait())
        return self.seen

    @property
    def hellos(self) -> list[Connected]:
        return [e for e in self.events() if isinstance(e, Connected)]

    @property
    def stats(self) -> list[tuple[str, StatsWindow]]:
        return [(e.proxy_id, e.window) for e in self.events() if isinstance(e, Stats)]

    async def start_bootstrap(self) -> BootstrapServer:
        assert self.fleet is not None
        self.boot = BootstrapServer(self.ca, self.tokens, self.audit, clock=now,
                                    fleet_url=self.fleet.url)
        await self.boot.start("127.0.0.1", 0)
        return self.boot

    async def stop(self) -> None:
        if self.boot is not None:
            await self.boot.stop()
        if self.fleet is not None:
            await self.fleet.stop()

    def kinds(self) -> list[str]:
        return [r.kind for r in reversed(self.audit.list(limit=1000))]

    def records(self, kind: str) -> list[Any]:
        return list(reversed(self.audit.list(kind=kind, limit=1000)))

    def enroll(self, state_dir: Path, service: str, namespace: str = "default",
               *, ttl: timedelta = timedelta(hours=24), at: datetime | None = None) -> StateDir:
        """Give a state dir an SVID directly (what bootstrap would do)."""
        sd = StateDir(state_dir)
        key = new_key()
        chain = self.ca.issue_svid(make_csr(key, service), spiffe_id(TD, namespace, service),
                                   now=at or now(), ttl=ttl)
        sd.save_identity(key, chain.decode(), self.ca.trust_bundle_pem().decode())
        return sd


@dataclass
class Agent:
    runtime: ProxyRuntime
    agent: FleetAgent
    task: asyncio.Task[None]

    async def stop(self) -> None:
        await self.agent.stop()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        await self.runtime.aclose()


async def start_agent(sd: StateDir, url: str, proxy_id: str, service: str,
                      namespace: str = "default", **kwargs: Any) -> Agent:
    loop = asyncio.get_running_loop()
    runtime = ProxyRuntime(loop, state_dir=sd.path)
    await runtime.load_persisted()
    kwargs.setdefault("backoff_base", 0.05)
    kwargs.setdefault("backoff_cap", 0.3)
    kwargs.setdefault("stats_interval", 0.2)
    agent = FleetAgent(runtime, sd, fleet_url=url, proxy_id=proxy_id, service=service,
                       namespace=namespace, **kwargs)
    task = loop.create_task(agent.run())
    return Agent(runtime, agent, task)
