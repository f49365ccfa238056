"""`meshcd serve` in one process, the composition root: store + audit, CA, Git source with
its poll and webhook refreshes, the revision pipeline, the fleet listener, the bootstrap
endpoint and the API. Only this module constructs the shells; the API and the pages get the
read model (`view.py`) and the operators' commands (`commands.py`), never this object.

Threads: the fetch coordinator's worker (fetch, observe the branch, hand the observation to
the loop) and the poll scheduler; everything else runs on one asyncio loop.
`Controller.run(stop)` builds every shell once, in order, into a frozen `Parts` (assigned
once to the `_parts` slot `__init__` declares: no other attribute is set outside `__init__`,
tests/project/test_composition_root.py), starts them on an `AsyncExitStack`, waits for
`stop`, and the stack shuts them down in reverse (each step once, a failing step logged, the
rest still run).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine

from reconciler.audit import AuditLog
from reconciler.audit.anchor import CheckpointError
from reconciler.ca import CertificateAuthority, JoinTokens
from reconciler.controller.anchoring import AuditAnchoring
from reconciler.controller.commands import Commands
from reconciler.controller.datadir import ensure_admin_token, token_id, write_address
from reconciler.controller.metrics import ControllerMetrics
from reconciler.controller.settings import FORGES, Settings
from reconciler.controller.view import ControllerView, Identity, PagesView
from reconciler.controller.webhook_audit import WebhookAudit
from reconciler.errors import RollbackRefused, StartupError
from reconciler.fleet import (
    Acked,
    BootstrapServer,
    Connected,
    FleetEvent,
    FleetServer,
    LedgerStore,
    Nacked,
)
from reconciler.language.validate import validate
from reconciler.net.http import TrackRequests, uvicorn_handler
from reconciler.net.listener import GuardedListener, ListenerCollector
from reconciler.revisions import (
    AllAtOnceDeployer,
    Deployer,
    KnownProxy,
    Pipeline,
    Revision,
    RevisionStore,
    trigger_of,
)
from reconciler.revisions.canary import CanaryDeployer
from reconciler.revisions.prometheus_feed import PrometheusFeed
from reconciler.source import (
    BranchRecreated,
    BranchWatch,
    FetchCoordinator,
    FetchOutcome,
    GitMirror,
    PollingSchedule,
    SignaturePolicy,
    SourceError,
    credentials_from_settings,
    observe_branch,
    parse_remote_url,
)
from reconciler.source.tree import GitTreeSource
from reconciler.store import StoreError, open_engine, sqlite_url
from reconciler.store.health import StoreHealth
from reconciler.store.health import watch as watch_store

log = logging.getLogger("meshcd.controller")

WEBHOOK_WINDOW_S = 1.0  # webhook refreshes inside this window after a fetch are coalesced


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the controller owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _cert_names(host: str, advertise: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """DNS names and IPs for the serving certificate."""
    names, ips = {"localhost"}, {"127.0.0.1"}
    for h in (host, advertise):
        if not h or h in ("0.0.0.0", "::", ""):
            continue
        try:
            ipaddress.ip_address(h)
            ips.add(h)
        except ValueError:
            names.add(h)
    return tuple(sorted(names)), tuple(sorted(ips))


@dataclass(frozen=True)
class StoreParts:
    """The store and the shells over it, opened first (in a thread) and disposed of last."""

    engine: Engine
    health: StoreHealth
    audit: AuditLog
    tokens: JoinTokens
    revisions: RevisionStore
    ledger_store: LedgerStore


@dataclass(frozen=True)
class SourceParts:
    mirror: GitMirror
    policy: SignaturePolicy
    display: str  # the remote without credentials


@dataclass(frozen=True)
class Parts:
    """What `Controller.run()` builds, once, in order; assigned once before anything runs."""

    loop: asyncio.AbstractEventLoop
    store: StoreParts
    source: SourceParts
    epoch: int
    admin_token: str
    trust_domain: str
    ca: CertificateAuthority
    webhook_audit: WebhookAudit
    anchoring: AuditAnchoring
    webhook_router: Any
    fleet: FleetServer
    fleet_events: asyncio.Queue[FleetEvent]
    deployer: Deployer
    canary: CanaryDeployer | None
    pipeline: Pipeline
    commands: Commands
    view: ControllerView
    prometheus_feed: PrometheusFeed | None  # analysis.source: prometheus
    coordinator: FetchCoordinator[Any]
    schedule: PollingSchedule


@dataclass
class Serving:
    """The facts that change while the controller serves (addresses as the listeners bind,
    the listeners, the webhook window), declared with the controller."""

    api_url: str = ""
    bootstrap_url: str = ""
    listeners: list[GuardedListener] = field(default_factory=list)  # fleet, bootstrap, api
    fleet_started: bool = False
    proxy_counts: dict[str, int] = field(default_factory=dict)
    hook_timer: asyncio.TimerHandle | None = None
    hook_last: float = -WEBHOOK_WINDOW_S
    hook_reasons: int = 0


def open_store(settings: Settings) -> StoreParts:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = open_engine(settings.store_url or sqlite_url(settings.data_dir))
    return StoreParts(engine=engine,
                      health=watch_store(engine, StoreHealth(), time.time),  # full, damaged
                      audit=AuditLog(engine), tokens=JoinTokens(engine),
                      revisions=RevisionStore(engine), ledger_store=LedgerStore(engine))


def open_source(s: Settings) -> SourceParts:
    try:
        remote = parse_remote_url(s.repo_url, base_dir=s.base_dir)
        creds = credentials_from_settings(s.credentials, base_dir=s.base_dir)
        mirror = GitMirror(s.data_dir / "mirror.git", remote, creds)
        policy = SignaturePolicy.from_file(s.signature_mode, s.allowed_signers,
                                           s.openpgp_keyring)
    except (OSError, ValueError) as exc:
        raise StartupError(f"source settings: {exc}") from None
    except SourceError as exc:
        if not exc.temporary:
            raise StartupError(f"source settings: {exc}") from None
        raise
    return SourceParts(mirror, policy, remote.display)


def learn_trust_domain(s: Settings, revisions: RevisionStore, source: SourceParts) -> str:
    """Settings, else what the store remembers, else the Mesh at the branch head."""
    if s.trust_domain:
        return s.trust_domain
    known = revisions.get_state("trust_domain")
    if isinstance(known, str) and known:
        return known
    try:
        source.mirror.fetch()
    except Exception as exc:
        raise StartupError(f"cannot fetch {source.display} to learn the trust domain "
                           f"({exc}); set trust_domain in the settings") from None
    head = source.mirror.resolve(s.branch)
    if head is None:
        raise StartupError(f"branch {s.branch!r} does not exist yet; set trust_domain in "
                           "the settings to start without it")
    result = validate(GitTreeSource(source.mirror.open_repository(), head))
    mesh = result.model.mesh
    if mesh is None or not mesh.trust_domain:
        raise StartupError(f"the head of {s.branch!r} has no valid Mesh document; set "
                           "trust_domain in the settings")
    return mesh.trust_domain


def known_proxies_of(fleet: FleetServer) -> list[KnownProxy]:
    connected = set(fleet.connected())
    return [KnownProxy(e.proxy_id, e.service, e.namespace, dict(e.labels),
                       e.proxy_id in connected)
            for e in fleet.ledger() if e.service]


class Controller:
    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = ControllerMetrics()
        self.started = asyncio.Event()
        self._parts: Parts | None = None  # set once by run(), before anything runs
        self._serving = Serving()
        self._branch = BranchWatch()  # deletions recorded once; status shows the branch's state

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise RuntimeError("the controller has not started")
        return self._parts

    # -- what the API reads (api.ApiHost) -------------------------------------------------------

    @property
    def view(self) -> ControllerView:
        return self.parts.view

    @property
    def commands(self) -> Commands:
        return self.parts.commands

    @property
    def audit(self) -> AuditLog:
        return self.parts.store.audit

    @property
    def tokens(self) -> JoinTokens:
        return self.parts.store.tokens

    @property
    def anchoring(self) -> AuditAnchoring:
        return self.parts.anchoring

    @property
    def webhook_router(self) -> Any:
        return self.parts.webhook_router

    @property
    def bootstrap_url(self) -> str:
        return self._serving.bootstrap_url

    @property
    def api_url(self) -> str:
        return self._serving.api_url

    @property
    def listeners(self) -> list[GuardedListener]:
        return self._serving.listeners

    # -- helpers used by the API -------------------------------------------------------------

    def _status_facts(self) -> dict[str, Any]:
        problems = self.health_problems()
        return {
            "branchState": self._branch.to_dict(),
            "auditAnchor": self.parts.anchoring.status(),
            "webhooksRejected": self.parts.webhook_audit.status(),
            "health": {"status": "degraded" if problems else "ok", "problems": problems,
                       "listeners": {x.name: x.status() for x in self._serving.listeners}},
        }

    def health_problems(self) -> list[str]:
        """What keeps this controller from working fully (healthz and status say degraded)."""
        problems = [p for p in (x.problem() for x in self._serving.listeners) if p]
        parts = self._parts
        if parts is None:
            return problems
        problems += parts.anchoring.degraded()
        problems += parts.store.health.problems()
        fetch = parts.coordinator.status
        if fetch.consecutive_failures:
            problems.append(f"fetch failing ({fetch.consecutive_failures} in a row): "
                            f"{fetch.last_error}")
        return problems

    def audit_now(self, actor: str, kind: str, subject: str, data: dict[str, Any]) -> None:
        self.audit.append(actor, kind, subject, data, now=self.clock(), oversize="truncate")

    def known_proxies(self) -> list[KnownProxy]:
        return known_proxies_of(self.parts.fleet)

    def now(self) -> datetime:
        return self.clock()

    def ca_fingerprint(self) -> str:
        return self.parts.ca.bundle_fingerprint()

    def refresh(self, actor: str) -> None:
        """`meshcd refresh` / POST /api/refresh: audited, then a fetch now."""
        self.audit_now(actor, "manual.refresh", self.settings.branch, {})
        self.parts.coordinator.refresh(f"manual:{actor}")

    async def metrics_text(self) -> bytes:
        # read on the loop, rendered in a thread
        self._serving.proxy_counts = self.parts.fleet.counts()
        return await asyncio.to_thread(self.metrics.render)

    # -- callbacks -----------------------------------------------------------------------------

    def _after_fetch(self, outcome: FetchOutcome[Any]) -> None:
        """On the fetch worker thread: record what the branch did, hand new work to the loop."""
        p = self.parts
        if not outcome.ok:
            self.metrics.fetches.labels("error").inc()
            err = outcome.error
            try:
                p.store.audit.append("scheduler", "fetch.failed", p.source.display, {
                    "error": p.coordinator.status.last_error or str(err),
                    "temporary": err.temporary if isinstance(err, SourceError) else True,
                    "reasons": list(outcome.reasons[:20]),
                    "consecutive_failures": p.coordinator.status.consecutive_failures,
                }, now=self.clock())
            except StoreError as exc:  # a full disk: status shows the failed fetch
                log.warning("fetch failed and cannot be recorded: %s", exc)
            return
        self.metrics.fetches.labels("ok").inc()
        obs = observe_branch(p.source.mirror, self.settings.branch, p.pipeline.last_recorded,
                             p.source.policy, now=int(self.clock().timestamp()))
        event = self._branch.follow(obs.event, now=self.clock().timestamp())
        if event is None:
            return  # a deletion already recorded: once, not at every poll
        if isinstance(event, BranchRecreated):  # back at the commit it had: nothing to deploy
            p.store.audit.append("controller", "source.branch_recreated", self.settings.branch, {
                "commit": event.new, "trigger": trigger_of(outcome.reasons)}, now=self.clock())
            return
        p.pipeline.observe(obs, outcome.reasons)

    async def _watch_fleet(self, events: asyncio.Queue[FleetEvent]) -> None:
        """The controller's share of the fleet's events: answer each hello, count ACKs and
        NACKs. (The canary deployer takes the fleet's events on its own queue.)"""
        answering: set[asyncio.Task[None]] = set()
        while True:
            event = await events.get()
            if isinstance(event, Connected):
                if event.checkpoint is not None:  # a proxy's word on the audit chain's head
                    self.parts.anchoring.observe_soon(event.checkpoint, event.proxy_id)
                task = asyncio.create_task(self._answer_hello(event))
                answering.add(task)
                task.add_done_callback(answering.discard)
            elif isinstance(event, Acked) and event.seconds is not None:
                self.metrics.push_to_ack.observe(event.seconds)
            elif isinstance(event, Nacked):
                self.metrics.nacks.inc()

    async def _answer_hello(self, hello: Connected) -> None:
        p = self.parts
        desired = None
        # mid-rollout a target keeps what the rollout gave it (old or new)
        if p.canary is None or not p.canary.is_target(hello.proxy_id):
            proxy = KnownProxy(hello.proxy_id, hello.service, hello.namespace,
                               dict(hello.labels), True)
            try:
                desired = await asyncio.to_thread(p.pipeline.snapshot_for, proxy)
            except Exception:
                log.exception("rendering the hello answer of %s failed", hello.proxy_id)
        p.fleet.answer_hello(hello, desired)

    async def _push_revert(self, target: Revision, actor: str, reason: str) -> str:
        from reconciler.source import push_revert

        p = self.parts
        expected = p.pipeline.last_recorded
        if expected is None:
            raise RollbackRefused("the controller has not seen the branch yet; cannot revert")
        message = (f"Revert to revision {target.id} ({target.commit[:12]})\n\n"
                   f"Rolled back by {actor} with `meshcd rollback --revert`"
                   + (f": {reason}" if reason else "") + ".\n")
        try:
            result = await asyncio.to_thread(
                push_revert, p.source.mirror, self.settings.branch, expected_head=expected,
                target_commit=target.commit, message=message, now=int(time.time()))
        except Exception as exc:
            raise RollbackRefused(f"revert not pushed: {exc}") from None
        await asyncio.to_thread(self.audit_now, actor, "rollback.revert_pushed", result.commit, {
            "target": target.id, "parent": result.parent, "branch": self.settings.branch})
        return str(result.commit)

    def _webhook_router(self, source: SourceParts, webhook_audit: WebhookAudit) -> Any:
        s = self.settings
        from webhooks.receiver import make_router
        from webhooks.settings import ReceiverSettings, ReceiverSettingsError

        try:
            rs = ReceiverSettings.from_sources(
                watched_repo=s.repo_url if "://" in s.repo_url or s.repo_url.startswith("/")
                else source.display,
                watched_branch=s.branch, secret_sources=dict(s.webhook_secrets),
                max_body_bytes=s.webhook_max_body_bytes, body_timeout_s=s.webhook_body_timeout_s)
        except ReceiverSettingsError as exc:
            raise StartupError(f"webhooks: {exc}") from None

        def on_update(update: Any) -> None:
            self._webhook_refresh(f"webhook:{update.forge}")

        return make_router(rs, on_update=on_update, on_audit=webhook_audit.on_delivery)

    def _webhook_refresh(self, reason: str) -> None:
        """On the loop. The first push after a quiet spell fetches at once; pushes within
        WEBHOOK_WINDOW_S of a fetch share one trailing fetch at the end of the window. So a
        single push deploys without delay and 100 pushes in a second cost two fetches (the
        coordinator also folds requests that arrive while a fetch runs into one)."""
        p, w = self.parts, self._serving
        now = p.loop.time()
        if w.hook_timer is not None:
            w.hook_reasons += 1
            return
        if now - w.hook_last >= WEBHOOK_WINDOW_S:
            w.hook_last = now
            p.coordinator.refresh(reason)
            return
        w.hook_reasons = 1
        w.hook_timer = p.loop.call_later(w.hook_last + WEBHOOK_WINDOW_S - now,
                                         self._webhook_trailing, reason)

    def _webhook_trailing(self, reason: str) -> None:
        p, w = self.parts, self._serving
        w.hook_timer = None
        w.hook_last = p.loop.time()
        n, w.hook_reasons = w.hook_reasons, 0
        with contextlib.suppress(Exception):  # closed during shutdown
            p.coordinator.refresh(reason if n == 1 else f"{reason} (+{n - 1} more)")

    # -- run -----------------------------------------------------------------------------------

    async def _build(self) -> Parts:
        """Open and construct every shell, in order; nothing serves yet (the coordinator and
        the poll schedule are built here and started by run())."""
        s = self.settings
        loop = asyncio.get_running_loop()
        store = await asyncio.to_thread(open_store, s)
        audit, revisions = store.audit, store.revisions
        source = open_source(s)
        epoch = await asyncio.to_thread(revisions.next_epoch)
        admin_token = ensure_admin_token(s.data_dir)
        trust_domain = await asyncio.to_thread(learn_trust_domain, s, revisions, source)
        await asyncio.to_thread(revisions.set_state, "trust_domain", trust_domain)
        try:
            ca = await asyncio.to_thread(CertificateAuthority.load_or_create, s.data_dir,
                                         trust_domain, now=self.clock())
        except Exception as exc:
            raise StartupError(f"CA: {exc}") from None
        webhook_audit = WebhookAudit(  # refused deliveries counted, not one record each
            audit, clock=self.clock, count=self.metrics.webhooks, forges=FORGES,
            interval_s=s.webhook_rejected_summary_s, samples=s.webhook_rejected_samples)
        try:
            anchoring = await asyncio.to_thread(AuditAnchoring, s.data_dir, audit, self.clock)
        except (OSError, CheckpointError) as exc:
            raise StartupError(f"audit anchor: {exc}") from None
        try:  # before this start appends anything
            await asyncio.to_thread(anchoring.check)
        except Exception as exc:  # the periodic check tries again; start anyway
            log.error("audit anchor check failed: %s", exc)
        webhook_router = self._webhook_router(source, webhook_audit)
        await asyncio.to_thread(audit.append, "controller", "controller.started",
                                source.display, {
                                    "epoch": epoch, "pid": os.getpid(),
                                    "branch": s.branch, "trust_domain": trust_domain,
                                    "admin_token_id": token_id(admin_token)},
                                now=self.clock())
        hostnames, ips = _cert_names(s.fleet.host, s.advertise_host)
        fleet = FleetServer(ca, audit, store.ledger_store, epoch=epoch, clock=self.clock,
                            hostnames=hostnames, ips=ips, answers_hellos=True)
        fleet_events: asyncio.Queue[FleetEvent] = asyncio.Queue()
        fleet.subscribe(fleet_events, stats=False)
        deployer: Deployer
        canary: CanaryDeployer | None = None
        if s.deploy_strategy == "canary":
            canary = deployer = CanaryDeployer(
                fleet, audit, revisions, clock=self.clock,
                preset=s.rollout_preset, ack_timeout=s.deploy_timeout_s,
                stats_source="prometheus" if s.analysis_source == "prometheus" else "fleet")
        else:
            deployer = AllAtOnceDeployer(fleet, timeout=s.deploy_timeout_s)
        pipeline = Pipeline(
            store=revisions, audit=audit, open_repo=source.mirror.open_repository,
            known_proxies=functools.partial(known_proxies_of, fleet), deployer=deployer,
            clock=self.clock, branch=s.branch, trust_domain=trust_domain,
            on_reconciled=self.metrics.reconcile.observe,
            current_desired=fleet.desired, fleet_assign=fleet.set_desired)
        commands = Commands(
            pipeline, deployer, revisions, audit, self.clock, s.branch,
            rollout_running=lambda: canary is not None and canary.active is not None,
            push_revert=self._push_revert)
        coordinator: FetchCoordinator[Any] = FetchCoordinator(
            source.mirror.fetch, on_outcome=self._after_fetch)
        serving = self._serving
        view = ControllerView(
            Identity(s.deploy_strategy, source.display, s.branch, trust_domain, epoch),
            pipeline, revisions, fleet, canary,
            fetch_status=lambda: coordinator.status,
            urls=lambda: {"api": serving.api_url, "fleet": fleet.url,
                          "bootstrap": serving.bootstrap_url},
            facts=self._status_facts)
        feed = None
        if canary is not None and s.analysis_source == "prometheus":
            from reconciler.analysis.prometheus import PrometheusProvider

            feed = PrometheusFeed(
                canary, PrometheusProvider(str(s.prometheus_url),
                                           direction=s.prometheus_direction),
                audit=self.audit_now, interval_s=s.prometheus_interval_s,
                lag_s=s.prometheus_lag_s)
        schedule = PollingSchedule(coordinator.poll, interval=s.poll_interval,
                                   jitter=s.poll_jitter)
        return Parts(loop=loop, store=store, source=source, epoch=epoch, admin_token=admin_token,
                     trust_domain=trust_domain, ca=ca, webhook_audit=webhook_audit,
                     anchoring=anchoring, webhook_router=webhook_router, fleet=fleet,
                     fleet_events=fleet_events, deployer=deployer, canary=canary,
                     pipeline=pipeline, commands=commands, view=view, prometheus_feed=feed,
                     coordinator=coordinator, schedule=schedule)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        if self._parts is not None:
            raise RuntimeError("a controller runs once")
        self._parts = p = await self._build()
        serving = self._serving
        audit, fleet, pipeline = p.store.audit, p.fleet, p.pipeline
        if p.prometheus_feed is not None:
            p.prometheus_feed.start()
        self.metrics.add_sources(
            revisions=p.store.revisions.counts, proxies=lambda: serving.proxy_counts,
            epoch=lambda: p.epoch,
            fetch_failures=lambda: p.coordinator.status.consecutive_failures)
        await pipeline.restore()
        async with contextlib.AsyncExitStack() as stack:
            # Popped in reverse: the fetches stop before the pipeline, the pipeline, the
            # Prometheus feed and the canary before the fleet (whose closing streams must not
            # reach a rollout), the audit record and the engine last.
            stack.push_async_callback(self._quietly, "engine", asyncio.to_thread,
                                      p.store.engine.dispose)
            stack.push_async_callback(self._quietly, "stopped record", asyncio.to_thread,
                                      self._audit_stopped)
            stack.push_async_callback(self._quietly, "fleet", self._stop_fleet)
            if p.canary is not None:
                stack.push_async_callback(self._quietly, "canary", p.canary.stop)
            if p.prometheus_feed is not None:
                stack.push_async_callback(self._quietly, "prometheus feed",
                                          self._stop_prometheus_feed)
            stack.push_async_callback(self._quietly, "pipeline", pipeline.stop)
            stack.push_async_callback(self._quietly, "webhook records",
                                      self._flush_webhook_records)
            await fleet.start(s.fleet.host, s.fleet.port, advertise=s.advertise_host,
                              limits=s.fleet_limits)
            serving.fleet_started = True
            fleet.set_desired(pipeline.deployed_assignments())
            boot = BootstrapServer(p.ca, p.store.tokens, audit, clock=self.clock,
                                   fleet_url=lambda: fleet.url,
                                   credentials=fleet.credentials)
            await boot.start(s.bootstrap.host, s.bootstrap.port, advertise=s.advertise_host,
                             limits=s.bootstrap_limits)
            stack.push_async_callback(self._quietly, "bootstrap", boot.stop)
            serving.listeners[:] = [x for x in (fleet.listener, boot.listener) if x is not None]
            serving.bootstrap_url = boot.url
            pipeline.start()
            from reconciler.auth import ApiTokens, install
            from reconciler.controller.api import make_app
            from reconciler.pages import PagesSettings, make_pages_router

            app = make_app(self)
            self.metrics.registry.register(ListenerCollector(lambda: serving.listeners))
            api_tokens = ApiTokens(audit.engine)  # same database as the audit log
            await asyncio.to_thread(api_tokens.bootstrap_admin, p.admin_token,
                                    now=self.clock())
            install(app, api_tokens)
            app.include_router(make_pages_router(PagesView(p.view, p.commands, p.loop),
                                                 audit,
                                                 api_tokens, PagesSettings(clock=self.clock)))
            sock = _listen(s.api.host, s.api.port)
            api_port = sock.getsockname()[1]
            host_text = f"[{s.api.host}]" if ":" in s.api.host else s.api.host
            if s.api.host in ("0.0.0.0", "::"):
                host_text = "127.0.0.1"
            serving.api_url = f"http://{host_text}:{api_port}"
            api_listener = GuardedListener("api", sock, s.api_limits)  # caps, timeouts
            serving.listeners.append(api_listener)
            config = uvicorn.Config(TrackRequests(app, api_listener), log_level="warning",
                                    lifespan="off", access_log=False, timeout_graceful_shutdown=5,
                                    timeout_keep_alive=s.api_limits.idle_timeout_s or 5)  # type: ignore[arg-type]
            server = _QuietServer(config)
            tasks = [asyncio.create_task(server.serve(sockets=[])),
                     asyncio.create_task(p.webhook_audit.run()),
                     # hellos that came before this are on the queue and answered now
                     asyncio.create_task(self._watch_fleet(p.fleet_events)),
                     asyncio.create_task(p.anchoring.run(fleet))]
            stack.push_async_callback(self._stop_api, server, tasks)
            stack.callback(self._cancel_webhook_timer)
            stack.push_async_callback(self._quietly, "fetches", asyncio.to_thread,
                                      p.coordinator.close, 30.0)
            stack.push_async_callback(self._quietly, "poll", asyncio.to_thread,
                                      p.schedule.stop, False)
            while not server.started:
                if tasks[0].done():
                    tasks[0].result()
                    raise StartupError("the API server stopped during start-up")
                await asyncio.sleep(0.01)
            tasks.append(asyncio.create_task(
                api_listener.serve(uvicorn_handler(server), close=True)))
            p.schedule.start()
            write_address(s.data_dir, {
                "api": serving.api_url, "fleet": fleet.url, "bootstrap": serving.bootstrap_url,
                "pid": os.getpid(), "epoch": p.epoch,
                "caFingerprint": "sha256:" + p.ca.bundle_fingerprint()})
            print(f"meshcd serve: epoch {p.epoch}; API {serving.api_url}; fleet {fleet.url}; "
                  f"bootstrap {serving.bootstrap_url}; watching {p.source.display} "
                  f"branch {s.branch}", flush=True)
            # What start-up built (modules, the deployed render, the restored ledger) lives as
            # long as the process: out of the collector's sight, a full collection no longer
            # walks it (measured: ~77 ms pauses on page loads with 10,000 proxies, docs/pages.md).
            gc.collect()
            gc.freeze()
            self.started.set()
            await stop.wait()
            log.info("shutting down")

    # -- shutdown steps (run by the exit stack, in reverse) ---------------------------------

    @staticmethod
    async def _quietly(what: str, step: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """One shutdown step: a failure is logged and the next steps still run."""
        try:
            await step(*args)
        except Exception:
            log.exception("shutting down the %s failed", what)

    async def _stop_api(self, server: _QuietServer, tasks: list[asyncio.Task[Any]]) -> None:
        server.should_exit = True
        for t in tasks[1:]:
            t.cancel()
        await asyncio.wait(tasks, timeout=10)

    def _cancel_webhook_timer(self) -> None:
        if self._serving.hook_timer is not None:
            self._serving.hook_timer.cancel()

    async def _stop_fleet(self) -> None:
        if self._serving.fleet_started:
            await self.parts.fleet.stop()

    async def _stop_prometheus_feed(self) -> None:
        feed = self.parts.prometheus_feed
        if feed is not None:
            await feed.stop()
            feed.provider.close()

    async def _flush_webhook_records(self) -> None:
        await self.parts.webhook_audit.flush(final=True)

    def _audit_stopped(self) -> None:
        p = self.parts
        p.store.audit.append("controller", "controller.stopped", p.source.display,
                             {"epoch": p.epoch}, now=self.clock())
        p.anchoring.tick()  # the anchor file covers the last record


def data_dir_of(settings: Settings) -> Path:
    return settings.data_dir
