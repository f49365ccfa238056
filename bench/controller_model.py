"""The controller's real read model for bench/page.py: `PagesView` (controller/view.py) over the
real parts `Controller.run()` builds, built here without it (no git, no listeners).

- revisions: a real `RevisionStore` with `revisions` rows (plan summaries made by the
  pipeline's `plan_summary`, findings, deploy results), the stored rollouts of the recent
  canary revisions (`save_rollout` rows as a finished 4-stage rollout over the whole fleet
  leaves them: the engine's state and its last STATUS with a 900-point series), the newest
  revision DEPLOYING with a live rollout;
- the fleet: `proxies` ledger rows saved through `LedgerStore` and loaded by a real
  `FleetServer` (as a restarted controller does), then most of them connected and given the
  deployed snapshot on their `ProxyRecord`s (what hello/ACK/NACK do), so the ledger holds
  every state: SYNCED, STALE, NACKED, DISCONNECTED;
- the rollout: a real `CanaryDeployer` whose active rollout is a real `RolloutEngine` driven
  with ACKs, per-second stats windows and bake timers into its third stage (50%), with the
  `SeriesRecorder` the deployer keeps (about 500 s of points);
- the pipeline: a real `Pipeline` whose `deployed_revision` is the newest deployed one;
- an asyncio loop in a thread: the loop the fleet, the rollout and the pin are read on.

What is not simulated: the stats traffic of 10,000 connected proxies on the loop (the real
controller's loop also handles one stats window per proxy per second), so the hops to the
loop here wait for nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from reconciler.analysis.sample import LATENCY_BUCKETS
from reconciler.audit import AuditLog
from reconciler.ca import CertificateAuthority
from reconciler.controller.app import Controller, known_proxies_of
from reconciler.controller.commands import Commands
from reconciler.controller.settings import Settings
from reconciler.controller.view import ControllerView, Identity, PagesView
from reconciler.fleet import DesiredSnapshot, FleetServer
from reconciler.fleet.ledger import LedgerEntry, ProxyState
from reconciler.fleet.ledger_store import LedgerStore
from reconciler.language.model import Analysis
from reconciler.revisions.canary import CanaryDeployer, _Rollout
from reconciler.revisions.decisions import plan_summary
from reconciler.revisions.model import Revision, RevisionStatus
from reconciler.revisions.pipeline import Pipeline
from reconciler.revisions.store import RevisionStore
from reconciler.rollout import (
    Acked,
    Command,
    Push,
    RolloutEngine,
    RolloutSettings,
    RolloutSpec,
    StageSpec,
    StartTimer,
    StatsReceived,
    Target,
    TimerFired,
)
from reconciler.rollout.series import SeriesRecorder
from reconciler.source.backoff import FetchStatus

TRUST_DOMAIN = "bench.meshcd.dev"
SERVICES = tuple(f"svc-{i:02d}.shop" for i in range(40))
# A careful RolloutPolicy: long bakes, so a rollout leaves a long series (900 points kept).
STAGES = (StageSpec(120.0, count=1), StageSpec(180.0, percent=10.0),
          StageSpec(300.0, percent=50.0), StageSpec(300.0, percent=100.0))
_OUTCOMES = (RevisionStatus.DEPLOYED, RevisionStatus.DEPLOYED, RevisionStatus.DEPLOYED,
             RevisionStatus.REJECTED, RevisionStatus.INVALID, RevisionStatus.SUPERSEDED,
             RevisionStatus.FAILED)
# Windows per service, role and second fed to the engine and the recorder (the sums are what
# the STATUS and the series hold, so more proxies per second would not make them bigger).
_WINDOWS_PER_SIDE = 2


@dataclass
class Built:
    controller: Controller
    data: PagesView
    loop: asyncio.AbstractEventLoop
    stored_rollouts: int
    done_revision: int  # a finished revision with a stored rollout (for its detail page)


def commit_of(i: int) -> str:
    return f"{(i * 2654435761) % 16**10:010x}" + "c0ffee" + f"{i:024x}"


def version_of(i: int) -> str:
    return f"{(i * 40503) % 16**8:08x}" * 8


def proxy_id(i: int) -> str:
    return f"{SERVICES[i % len(SERVICES)].split('.')[0]}-{i:05d}"


# -- stats windows ------------------------------------------------------------------------------

def window(second: int, rng: random.Random, *, error_share: float = 0.001) -> dict[str, Any]:
    n = 80 + rng.randrange(40)
    e5 = round(n * error_share * rng.random() * 2)
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    slow = max(1, n // 100)

    def put(seconds: float, count: int) -> None:
        i = next((k for k, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
        buckets[i] += count

    put(0.004 + rng.random() * 0.01, n - slow)
    put(0.05 + rng.random() * 0.05, slow)
    return {"second": second, "requests": {"2xx": n - e5, "3xx": 0, "4xx": 0, "5xx": e5},
            "connection_failures": 0, "denials": 0, "latency_buckets": buckets,
            "latency_sum_seconds": n * 0.008}


# -- a rollout driven like the deployer drives it ------------------------------------------------

class Driver:
    """Drives a RolloutEngine the way `CanaryDeployer` does (ACK every push at once, one
    stats window per second from a few canaries and baselines, fire the bake timer when it
    is due) and feeds the same windows to a `SeriesRecorder`."""

    def __init__(self, spec: RolloutSpec, started: float, seed: int) -> None:
        self.now = started
        self.started = started
        self.rng = random.Random(seed)
        self.series = SeriesRecorder()
        self.timers: dict[str, tuple[str, float]] = {}  # kind -> (token, due)
        self.pushes: list[Push] = []
        self._sides: tuple[Any, tuple[list[str], list[str]]] = (None, ([], []))
        self.engine, cmds = RolloutEngine.start(spec, started)
        self._take(cmds)

    def _take(self, cmds: list[Command]) -> None:
        for c in cmds:
            if isinstance(c, Push):
                self.pushes.append(c)
            elif isinstance(c, StartTimer):
                self.timers[c.token.split(":")[0]] = (c.token, self.now + c.seconds)

    def ack_pushes(self) -> None:
        while self.pushes:
            push = self.pushes.pop(0)
            for p in push.wait_for:
                version = push.assign.get(p)
                self._take(self.engine.handle(Acked(p, version or "", self.now)))

    def _pick(self, st: Any) -> tuple[list[str], list[str]]:
        """Per service, the first few canaries (on the new config, ACKed) and baselines: the
        judge looks at each service on its own."""
        canaries: dict[str, list[str]] = {}
        baseline: dict[str, list[str]] = {}
        for t in st.spec.targets:
            if t.proxy_id in st.on_new:
                if t.proxy_id in st.acked:
                    canaries.setdefault(t.service, []).append(t.proxy_id)
            else:
                baseline.setdefault(t.service, []).append(t.proxy_id)
        return ([p for ids in canaries.values() for p in ids[:_WINDOWS_PER_SIDE]],
                [p for ids in baseline.values() for p in ids[:_WINDOWS_PER_SIDE]])

    def run_until(self, t_end: float) -> None:
        """Seconds of traffic until `t_end` (or the rollout is over), firing due timers."""
        while self.now < t_end and self.engine.phase != "done":
            self.ack_pushes()
            second = int(self.now)
            self.now = float(second + 1)
            if self.engine.phase == "baking":
                st = self.engine.state
                key = (st.stage, len(st.acked))
                if self._sides[0] != key:
                    self._sides = (key, self._pick(st))
                canaries, baseline = self._sides[1]
                for role, ids in (("canary", canaries), ("baseline", baseline)):
                    for p in ids:
                        w = window(second, self.rng)
                        self.series.add(p, role, w, started_at=self.started,
                                        stage=st.stage + 1)
                        self._take(self.engine.handle(StatsReceived(p, w, self.now)))
            for kind, (token, due) in list(self.timers.items()):
                if due <= self.now:
                    del self.timers[kind]
                    self._take(self.engine.handle(TimerFired(token, self.now)))

    def status(self, revision_id: int, commit: str) -> dict[str, Any]:
        # What CanaryDeployer._status adds to the engine's STATUS.
        return {**self.engine.status(self.now), "revisionId": revision_id, "commit": commit,
                "startedAt": self.started, "series": self.series.to_list(), "source": "fleet"}


def rollout_spec(commit: str, previous: str, proxies: int, old: str, new: str) -> RolloutSpec:
    targets = tuple(Target(proxy_id(i), SERVICES[i % len(SERVICES)], new, old, True)
                    for i in range(proxies))
    settings = RolloutSettings(STAGES, {s: Analysis(min_requests=50) for s in SERVICES},
                               policies=("shop/careful",))
    return RolloutSpec(commit, previous, targets, settings)


# -- revisions ------------------------------------------------------------------------------------

def _plan(i: int, proxies: int, rng: random.Random) -> dict[str, Any]:
    changed = rng.randrange(1, 12)
    resources = [{"change": ("modified", "added", "removed")[k % 3], "kind": "Route",
                  "namespace": "shop", "name": f"route-{i}-{k}"} for k in range(changed)]
    services = [{"service": s, "added": 0, "changed": rng.randrange(0, proxies // 40 + 1),
                 "removed": 0} for s in SERVICES[: rng.randrange(1, len(SERVICES))]]
    granted = [{"destination": SERVICES[k % len(SERVICES)], "port": 8080, "method": "GET",
                "path": f"/v{k}/*", "host": "*", "sources": [f"spiffe://{TRUST_DOMAIN}/ns/shop/"
                                                             f"sa/caller-{j}" for j in range(3)],
                "source_count": 3 + k, "before": "deny", "after": "allow"}
               for k in range(rng.randrange(0, 20))]
    plan_json = {"from": commit_of(i - 1), "to": commit_of(i), "resources": resources,
                 "proxies": {"total": proxies, "unchanged": proxies // 2,
                             "changed": proxies // 2, "added": 0, "removed": 0,
                             "services": services},
                 "access": {"granted": granted, "revoked": []}}
    # A few big diffs (up to the cap the revision page folds), most a few KB.
    lines = 2000 if i % 50 == 0 else 60
    text = "\n".join(f"~ Route shop/route-{i}-{k % changed}: spec.rules[{k}].timeout "
                     f"{k}s -> {k + 1}s" for k in range(lines))
    return plan_summary(plan_json, text)


def _findings(status: RevisionStatus, i: int) -> list[dict[str, Any]]:
    n = 5 if status is RevisionStatus.INVALID else i % 3
    return [{"code": f"E{100 + k}" if status is RevisionStatus.INVALID else f"W{200 + k}",
             "severity": "error" if status is RevisionStatus.INVALID else "warning",
             "message": f"route-{i}-{k}: backend port 8080 is not a port of the service",
             "file": f"routes/route-{i}.yaml", "line": 10 + k, "column": 3} for k in range(n)]


def fill_revisions(store: RevisionStore, count: int, proxies: int, now: datetime,
                   done_state: dict[str, Any], done_status: dict[str, Any],
                   keep_rollouts: int) -> tuple[int, int]:
    """`count` revisions, oldest first; the newest DEPLOYING (its rollout is the live one).
    The newest `keep_rollouts` canary revisions get a stored rollout. Returns (stored
    rollouts, one finished revision with a stored rollout)."""
    rng = random.Random(1)
    canary_ids: list[int] = []
    for i in range(1, count + 1):
        status = _OUTCOMES[rng.randrange(len(_OUTCOMES))] if i < count - 1 else (
            RevisionStatus.DEPLOYED if i == count - 1 else RevisionStatus.DEPLOYING)
        at = now - timedelta(minutes=(count - i) * 7)
        deploy: dict[str, Any] = {}
        reason = ""
        if status in (RevisionStatus.DEPLOYED, RevisionStatus.REJECTED):
            outcome = "promoted" if status is RevisionStatus.DEPLOYED else "rolled_back"
            deploy = {"status": str(status), "acked": proxies if outcome == "promoted" else 0,
                      "nacked": {}, "timedOut": [], "reason": "", "outcome": outcome,
                      "details": {"strategy": "canary", "stages": len(STAGES),
                                  "history": done_state.get("history", [])},
                      "absent": [], "seconds": 912.4}
            if status is RevisionStatus.REJECTED:
                reason = "stage 2 (10%): error rate 4.1% > 1%"
            canary_ids.append(i)
        elif status is RevisionStatus.INVALID:
            reason = "5 errors"
        elif status is RevisionStatus.SUPERSEDED:
            reason = f"superseded by {commit_of(i + 1)[:12]}"
        elif status is RevisionStatus.FAILED:
            reason = "deploy timed out: 12 proxies did not ACK within 60s"
        rev = Revision(
            id=0, commit=commit_of(i), branch="main", author=f"dev{i % 7} <dev{i % 7}@shop>",
            message=f"routes: change {i}\n\nlonger description of change {i}",
            trigger=("webhook", "poll", "manual")[i % 3], status=status, detected_at=at,
            updated_at=at + timedelta(minutes=3),
            signature={"status": "verified", "method": "ssh", "key": "SHA256:ab12cd34",
                       "signer": f"dev{i % 7}@shop"} if i % 4 else {"status": "unsigned"},
            findings=_findings(status, i),
            plan={} if status is RevisionStatus.INVALID else _plan(i, proxies, rng),
            deploy=deploy, reason=reason)
        got = store.add(rev)
        assert got.id == i, (got.id, i)
    kept = canary_ids[-keep_rollouts:]
    for rid in kept:
        last = {**done_status, "revisionId": rid, "commit": commit_of(rid)}
        store.save_rollout(rid, commit_of(rid), done_state, last,
                           (now - timedelta(minutes=(count - rid) * 7)).isoformat())
    return len(kept), kept[-1]


# -- the fleet --------------------------------------------------------------------------------

def fill_ledger(store: LedgerStore, proxies: int, now: datetime, old: str) -> None:
    entries = [LedgerEntry(
        proxy_id=proxy_id(i), service=SERVICES[i % len(SERVICES)].split(".")[0],
        namespace="shop", labels={"app": SERVICES[i % len(SERVICES)].split(".")[0],
                                  "zone": f"z{i % 3}"},
        desired_version=old, desired_revision="", sent_nonce=f"1.{i}", acked_version=old,
        last_error=None, state=ProxyState.SYNCED, connected_at=now - timedelta(hours=5),
        last_seen=now - timedelta(seconds=i % 600)) for i in range(proxies)]
    for k in range(0, len(entries), 2000):
        store.save(entries[k:k + 2000])


def connect_fleet(fleet: FleetServer, proxies: int, now: datetime,
                  deployed: DesiredSnapshot, rollout_new: DesiredSnapshot,
                  canaries: set[str]) -> None:
    """What hellos, pushes and ACK/NACKs leave on the records (on the loop thread, before
    anything reads them): 2% never came back, 1% NACKed the deployed snapshot, 2% have it in
    flight, the live rollout's canaries run its new snapshot."""
    records = fleet._records  # the server's own ledger; the hello/ack handlers write it
    assign: dict[str, DesiredSnapshot] = {}
    for i in range(proxies):
        pid = proxy_id(i)
        assign[pid] = rollout_new if pid in canaries else deployed
    fleet.set_desired(assign)
    nonce = 0
    for i in range(proxies):
        pid = proxy_id(i)
        rec = records[pid]
        if i % 50 == 7:
            continue  # DISCONNECTED since the restart
        rec.connect(rec.service, rec.namespace, rec.labels, deployed.version if pid not in
                    canaries else rollout_new.version, now - timedelta(seconds=i % 3600))
        rec.last_seen = now - timedelta(seconds=i % 30)
        if i % 100 == 13:
            rec.set_desired(DesiredSnapshot(version_of(10_000 + i), "next", b"{}"))
            nonce += 1
            rec.start_push(f"2.{nonce}", 0.0)
            rec.nack(f"2.{nonce}", "listener 0.0.0.0:8080: duplicate route name 'r1'")
        elif i % 50 == 19:
            rec.set_desired(DesiredSnapshot(version_of(20_000 + i), "next", b"{}"))
            nonce += 1
            rec.start_push(f"2.{nonce}", 0.0)  # in flight: STALE


# -- the loop -----------------------------------------------------------------------------------

@contextlib.contextmanager
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def build(engine: Engine, audit: AuditLog, loop: asyncio.AbstractEventLoop, data_dir: Path,
          *, revisions: int, proxies: int, keep_rollouts: int = 100) -> Built:
    now_dt = datetime.now(UTC)
    wall = time.time()
    deployed_v, new_v = version_of(1), version_of(2)
    store = RevisionStore(engine)
    ledger = LedgerStore(engine)

    # A finished rollout over the whole fleet: what save_rollout keeps for a canary revision.
    done = Driver(rollout_spec(commit_of(revisions - 1), commit_of(revisions - 2), proxies,
                               version_of(0), deployed_v), wall - 3600, seed=2)
    done.run_until(wall - 3600 + 4000)
    assert done.engine.phase == "done", done.engine.phase
    done_state = done.engine.to_dict()
    done_status = done.status(revisions - 1, commit_of(revisions - 1))
    stored, done_revision = fill_revisions(store, revisions, proxies, now_dt, done_state,
                                           done_status, keep_rollouts)

    # The live one: the newest revision, baking its third stage (50%).
    live = Driver(rollout_spec(commit_of(revisions), commit_of(revisions - 1), proxies,
                               deployed_v, new_v), wall - 500, seed=3)
    live.run_until(wall)
    live.ack_pushes()
    assert live.engine.phase in ("baking", "pushing"), live.engine.phase

    fill_ledger(ledger, proxies, now_dt, version_of(0))
    settings = Settings(repo_url="https://git.example/shop/mesh.git", data_dir=data_dir,
                        store_url=str(engine.url))
    ctl = Controller(settings)  # its clock; the parts below are what run() would build
    ca = CertificateAuthority.load_or_create(data_dir, TRUST_DOMAIN, now=now_dt)
    display = "git.example/shop/mesh.git"
    made: dict[str, Any] = {}

    async def on_loop() -> None:  # the fleet server and the deployer belong to the loop
        fleet = FleetServer(ca, audit, ledger, epoch=2, clock=ctl.clock, tune_malloc=False)
        st = live.engine.state
        canaries = {p for p in st.on_new}
        connect_fleet(fleet, proxies, now_dt,
                      DesiredSnapshot(deployed_v, commit_of(revisions - 1), b"{}"),
                      DesiredSnapshot(new_v, commit_of(revisions), b"{}"), canaries)
        canary = CanaryDeployer(fleet, audit, store, clock=ctl.clock,
                                now=lambda: live.now + (time.time() - wall))
        canary.active = _Rollout(revisions, commit_of(revisions), live.engine, {},
                                 live.started, loop.create_future(), live.series)
        made["fleet"], made["canary"] = fleet, canary
        made["pipeline"] = Pipeline(store=store, audit=audit, open_repo=lambda: None,
                                    known_proxies=lambda: known_proxies_of(fleet),
                                    deployer=canary, clock=ctl.clock, branch="main",
                                    trust_domain=TRUST_DOMAIN, current_desired=fleet.desired,
                                    fleet_assign=fleet.set_desired)

    asyncio.run_coroutine_threadsafe(on_loop(), loop).result()
    fleet: FleetServer = made["fleet"]
    canary: CanaryDeployer = made["canary"]
    pipeline: Pipeline = made["pipeline"]
    pipeline.queue.state.deployed = store.get(revisions - 1)  # the queue holds them
    pipeline.queue.state.current = store.get(revisions)

    class _Coordinator:  # FetchCoordinator's read side: the last fetch went well
        status = FetchStatus().succeeded(wall - 20)

    async def no_revert(*_args: Any) -> str:
        raise RuntimeError("the bench pushes no revert")

    view = ControllerView(Identity("canary", display, "main", TRUST_DOMAIN, 2),
                          pipeline, store, fleet, canary,
                          fetch_status=lambda: _Coordinator.status, urls=dict)
    commands = Commands(pipeline, canary, store, audit, ctl.clock, "main",
                        rollout_running=lambda: canary.active is not None,
                        push_revert=no_revert)
    return Built(ctl, PagesView(view, commands, loop), loop, stored, done_revision)
