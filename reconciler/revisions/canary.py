"""The canary deploy: the thin shell that drives the pure rollout engine
(`reconciler.rollout.RolloutEngine`, docs/rollout.md) with the fleet, a clock, timers, the
audit log and the store.

Events reach the engine one at a time, in arrival order, through one queue (`events`) and
one consumer task: the fleet's events (`reconciler.fleet.events`: ACKs, NACKs, hellos,
per-second stats, disconnects; the queue is subscribed to the fleet server while a rollout
runs, and the Prometheus feed puts its stats there too), its timers, operator commands (the
API) and new commits (the pipeline). Fleet events are turned into the engine's events
(`engine_event`) when they are taken off the queue, against the rollout running then. The
commands the engine returns are run in order before the next event is handled, so an `Audit`
lands before the state that follows it is persisted.

Whether a proxy acked is the fleet ledger's fact: a `Push` asks the ledger about proxies that
already answered its version (`FleetServer.outcome`), the rest are answered by `Acked` /
`Nacked` events; the engine's own ACK timer decides when waiting is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.audit import AuditLog
from reconciler.fleet import DesiredSnapshot, FleetServer
from reconciler.fleet import events as fev
from reconciler.revisions.decisions import DeployVerdict
from reconciler.revisions.deployer import AllAtOnceDeployer, DeployRequest
from reconciler.revisions.model import RevisionStatus
from reconciler.revisions.store import RevisionStore
from reconciler.rollout import (
    Acked,
    Audit,
    Command,
    Disconnected,
    Event,
    Finished,
    Nacked,
    NewCommit,
    Operator,
    Persist,
    Push,
    Reply,
    RolloutEngine,
    RolloutSpec,
    StartTimer,
    StatsReceived,
    Target,
    TimerFired,
    settings_for,
)
from reconciler.rollout.series import SeriesRecorder
from reconciler.store.timefmt import format_instant

log = logging.getLogger("meshcd.canary")

_STATUS = {"deployed": RevisionStatus.DEPLOYED, "rejected": RevisionStatus.REJECTED,
           "superseded": RevisionStatus.SUPERSEDED}
OPERATOR_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class _Internal:
    """An item of the queue that is not a fleet event: an engine event (with the future an
    operator command waits on) or commands to run in order. It may name the rollout it
    belongs to: a timer or an ACK of an earlier rollout must not reach the next one (timer
    tokens restart with each engine)."""

    item: Event | list[Command]
    reply: asyncio.Future[Reply] | None = None
    owner: _Rollout | None = None


@dataclass
class _Rollout:
    """The rollout in progress."""

    revision_id: int
    commit: str
    engine: RolloutEngine
    snapshots: dict[str, DesiredSnapshot]  # by version: every version it may push
    started_at: float
    finished: asyncio.Future[Finished]
    series: SeriesRecorder
    nacked: dict[str, str] = field(default_factory=dict)
    announced: set[str] = field(default_factory=set)  # newer commits told to the engine


class CanaryDeployer:
    """`Deployer` that rolls a revision out in canary stages (one rollout at a time)."""

    hello_gets_new = False

    def __init__(self, fleet: FleetServer, audit: AuditLog, store: RevisionStore, *,
                 clock: Callable[[], datetime], preset: str = "default",
                 ack_timeout: float = 30.0, rollback_timeout: float = 30.0,
                 stats_source: fev.StatsSource = "fleet",
                 now: Callable[[], float] = time.time) -> None:
        self.fleet = fleet
        self.audit = audit
        self.store = store
        self.clock = clock
        self.now = now
        self.preset = preset
        self.ack_timeout = ack_timeout
        self.rollback_timeout = rollback_timeout
        self.all_at_once = AllAtOnceDeployer(fleet, timeout=ack_timeout)
        self.active: _Rollout | None = None
        # A newer valid commit the pipeline told before this deploy's engine existed: the
        # rollout hears it as soon as it starts (Deployer.new_commit).
        self._told: str | None = None
        # Where the judge's stats come from: "fleet" (the proxies' stream) or "prometheus"
        # (revisions/prometheus_feed.py); stats from the other source are not evidence.
        self.stats_source: fev.StatsSource = stats_source
        # The one input: the fleet's events and this shell's own items, in arrival order.
        self.events: asyncio.Queue[fev.FleetEvent | _Internal] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None

    # -- Deployer ----------------------------------------------------------------------------

    async def deploy(self, request: DeployRequest) -> DeployVerdict:
        try:
            return await self._deploy(request)
        finally:
            self._told = None

    async def _deploy(self, request: DeployRequest) -> DeployVerdict:
        if request.strategy == "all-at-once":
            return await self.all_at_once.deploy(request)
        snapshots: dict[str, DesiredSnapshot] = {}
        for d in (*request.previous.values(), *request.snapshots.values()):
            snapshots[d.version] = d
        saved = await asyncio.to_thread(self.store.load_rollout, request.revision_id)
        now = self.now()
        if saved is not None and saved[0].get("phase") == "done":
            # It finished before a restart could mark the revision: take its outcome.
            outcome = saved[0].get("outcome") or {}
            return self._verdict(Finished(outcome.get("outcome", "rolled_back"),
                                          outcome.get("revisionStatus", "rejected"),
                                          outcome.get("reason", "")), saved[0], {})
        if saved is not None:
            engine, commands = RolloutEngine.restore(saved[0], now)
        else:
            engine, commands = RolloutEngine.start(self._spec(request), now)
        loop = asyncio.get_running_loop()
        started = float(saved[1].get("startedAt", now)) if saved is not None else now
        rollout = _Rollout(request.revision_id, request.commit, engine, snapshots, started,
                           loop.create_future(), SeriesRecorder())
        self.active = rollout
        # The fleet's events while it runs (its stats only when they are the evidence).
        self.fleet.subscribe(self.events, stats=self.stats_source == "fleet")
        self._ensure_consumer()
        # The first commands go through the queue too, so that nothing an event causes can
        # run before them (an abort's rollback push before the first stage's push).
        self.events.put_nowait(_Internal(commands, None, rollout))
        waiting, self._told = self._told, None
        if waiting is not None:
            self.new_commit(waiting)
        try:
            finished = await rollout.finished
        finally:
            self.fleet.unsubscribe(self.events)
            self.active = None
        await self._persist(rollout, rollout.engine.to_dict())
        return self._verdict(finished, rollout.engine.to_dict(), rollout.nacked)

    def _spec(self, request: DeployRequest) -> RolloutSpec:
        connected = set(request.targets.wait_for)
        targets = []
        for proxy_id, new in sorted(request.snapshots.items()):
            old = request.previous.get(proxy_id)
            if old is not None and old.version == new.version:
                continue  # unchanged proxies are never touched
            targets.append(Target(proxy_id, request.services.get(proxy_id, ""), new.version,
                                  old.version if old is not None else None,
                                  proxy_id in connected))
        services = {t.service for t in targets}
        settings = settings_for({svc: request.policies.get(svc) for svc in sorted(services)},
                                preset=self.preset)
        return RolloutSpec(request.commit, request.previous_commit, tuple(targets), settings,
                           ack_timeout=self.ack_timeout, rollback_timeout=self.rollback_timeout)

    def _verdict(self, finished: Finished, state: Mapping[str, Any],
                 nacked: Mapping[str, str]) -> DeployVerdict:
        status = _STATUS.get(finished.revision_status, RevisionStatus.REJECTED)
        acked = tuple(sorted(state.get("acked", ())))
        details = {"strategy": "canary", "stages": len(state.get("spec", {}).get(
            "settings", {}).get("stages", [])), "history": state.get("history", []),
            "next": finished.next_revision}
        return DeployVerdict(status, acked, dict(nacked), (), finished.reason,
                             outcome=finished.outcome, details=details)

    # -- inputs from the fleet, the API and the pipeline -------------------------------------

    def engine_event(self, event: fev.FleetEvent) -> Event | None:
        """The running rollout's event for a fleet event (None: nothing for it), at the time
        the event happened. A stats window of the judged source is also added to the
        rollout's charts."""
        r = self.active
        if r is None or r.engine.state.spec.target(event.proxy_id) is None:
            return None
        now = event.at
        match event:
            case fev.Acked():
                return Acked(event.proxy_id, event.version, now)
            case fev.Nacked():
                if event.version in r.snapshots:
                    r.nacked[event.proxy_id] = event.error
                return Nacked(event.proxy_id, event.version, event.error, now)
            case fev.Connected():
                # Back, already running a version (its ACK may have died with the old
                # stream): as good as an ACK of it; the engine ignores other versions.
                if event.running_version is None:
                    return None
                return Acked(event.proxy_id, event.running_version, now)
            case fev.Disconnected():
                return Disconnected(event.proxy_id, now)
            case fev.Stats():
                if event.source != self.stats_source:
                    return None  # no mixing of sources
                window = event.window.to_wire()
                role = r.engine.role_of(event.proxy_id)
                if role is not None:
                    with contextlib.suppress(ValueError):  # not chartable is still evidence
                        r.series.add(event.proxy_id, role, window, started_at=r.started_at,
                                     stage=r.engine.state.stage + 1)
                return StatsReceived(event.proxy_id, window, now)
        return None

    def is_target(self, proxy_id: str) -> bool:
        r = self.active
        return r is not None and r.engine.state.spec.target(proxy_id) is not None

    def new_commit(self, commit: str) -> bool:
        """A newer valid commit is waiting. Told before the rollout's engine exists, it is
        kept for it (the pipeline tells only during a deploy)."""
        r = self.active
        if r is None:
            self._told = commit
            return False
        if commit == r.commit:
            return False
        if commit not in r.announced:  # the pipeline and the start of a rollout may both tell
            r.announced.add(commit)
            self.feed(NewCommit(commit, self.now()), owner=r)
        return True

    async def operator(self, action: str, actor: str, reason: str = "") -> tuple[bool, str]:
        """An operator command for the running rollout: (accepted, message)."""
        if self.active is None:
            return False, "no rollout in progress"
        reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.feed(Operator(action, actor, self.now(), reason[:500]), reply)
        try:
            got = await asyncio.wait_for(reply, OPERATOR_TIMEOUT_S)
        except TimeoutError:
            return False, "the rollout did not answer in time; try again"
        return got.accepted, got.message

    def status(self) -> dict[str, Any] | None:
        """The running rollout's status (docs/rollout.md) with the API's extra fields."""
        r = self.active
        if r is None:
            return None
        return self._status(r)

    def _status(self, r: _Rollout) -> dict[str, Any]:
        return {**r.engine.status(self.now()), "revisionId": r.revision_id, "commit": r.commit,
                "startedAt": r.started_at, "series": r.series.to_list(),
                "source": self.stats_source}

    def feed(self, event: Event, reply: asyncio.Future[Reply] | None = None,
             owner: _Rollout | None = None) -> None:
        self.events.put_nowait(_Internal(event, reply, owner))

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._consumer
            self._consumer = None

    # -- the engine's loop --------------------------------------------------------------------

    def _ensure_consumer(self) -> None:
        if self._consumer is None or self._consumer.done():
            self._consumer = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            got = await self.events.get()
            r = self.active
            if not isinstance(got, _Internal):
                try:
                    translated = self.engine_event(got)
                except Exception:  # a bug must not kill the loop that would roll back
                    log.exception("fleet event %r failed", type(got).__name__)
                    continue
                if translated is None or r is None:
                    continue
                got = _Internal(translated, None, r)
            event, reply, owner = got.item, got.reply, got.owner
            if owner is not None and owner is not r:
                continue  # from a rollout that is over
            if isinstance(event, list):
                if r is not None:
                    try:
                        await self._run(r, event)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("rollout commands failed")
                continue
            if r is None:
                if reply is not None and not reply.done():
                    action = event.action if isinstance(event, Operator) else "?"
                    reply.set_result(Reply(action, False, "no rollout in progress"))
                continue
            try:
                commands = r.engine.handle(event)
                # The answer goes out after the commands ran: an accepted command is audited
                # and its state stored before the operator hears "accepted".
                await self._run(r, commands)
                if reply is not None and not reply.done():
                    answer = next((c for c in commands if isinstance(c, Reply)), None)
                    reply.set_result(answer or Reply("?", False, "no answer"))
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the loop that would roll back
                log.exception("rollout event %r failed", type(event).__name__)

    async def _run(self, r: _Rollout, commands: list[Command]) -> None:
        for c in commands:
            match c:
                case Push():
                    self._push(r, c)
                case StartTimer():
                    asyncio.get_running_loop().call_later(max(0.0, c.seconds), self._fire, r,
                                                          c.token)
                case Audit():
                    extra = {"source": self.stats_source} if c.kind == "rollout.judged" else {}
                    await asyncio.to_thread(self.audit.append, c.actor, c.kind, c.subject,
                                            {**c.data, **extra, "revision_id": r.revision_id},
                                            now=self.clock(), oversize="truncate")
                case Persist():
                    await self._persist(r, c.state)
                case Reply():
                    pass  # answered in _consume
                case Finished():
                    if not r.finished.done():
                        r.finished.set_result(c)

    def _fire(self, r: _Rollout, token: str) -> None:
        self.feed(TimerFired(token, self.now()), owner=r)

    async def _persist(self, r: _Rollout, state: Mapping[str, Any]) -> None:
        status = self._status(r)
        await asyncio.to_thread(self.store.save_rollout, r.revision_id, r.commit, dict(state),
                                status, format_instant(self.clock()))

    def _push(self, r: _Rollout, push: Push) -> None:
        assign: dict[str, DesiredSnapshot] = {}
        clear: list[str] = []
        for proxy_id, version in push.assign.items():
            if version is None:
                clear.append(proxy_id)
                continue
            snap = r.snapshots.get(version)
            if snap is None:
                log.error("rollout of %s: no snapshot %s for %s", r.commit[:12], version[:12],
                          proxy_id)
                continue
            assign[proxy_id] = snap
        self.fleet.set_desired(assign)
        if clear:
            self.fleet.clear_desired(clear)
        # Proxies that answered this version before (already on it, or refused it on this
        # connection) are not pushed again: the ledger's word stands for their answer. The
        # others answer with Acked / Nacked events; a timeout is the engine's own timer.
        now = self.now()
        for proxy_id in sorted(push.wait_for):
            version = push.assign.get(proxy_id)
            outcome = self.fleet.outcome(proxy_id, version) if version is not None else None
            if version is None or outcome is None:
                continue
            if outcome.status == "acked":
                self.feed(Acked(proxy_id, version, now), owner=r)
            else:
                r.nacked[proxy_id] = outcome.error or ""
                self.feed(Nacked(proxy_id, version, outcome.error or "", now), owner=r)
