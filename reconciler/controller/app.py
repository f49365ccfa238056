"""`meshcd serve` in one process, the composition root: store + audit, CA, Git source with
its poll and webhook refreshes, the revision pipeline, the fleet listener, the bootstrap
endpoint and the API. Only this module constructs the shells; the API and the pages get the
read model (`view.py`) and the operators' commands (`commands.py`), never this object.

Threads: the fetch coordinator's worker (fetch, observe the branch, hand the observation to
the loop) and the poll scheduler; everything else runs on one asyncio loop.
`Controller.run(stop)` starts everything in order on an `AsyncExitStack`, waits for `stop`,
and the stack shuts it down in reverse (each step once, a failing step logged, the rest
still run).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

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


class Controller:
    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = ControllerMetrics()
        self.webhook_router: Any = None
        self.epoch = 0
        self.api_url = ""
        self.bootstrap_url = ""
        self.started = asyncio.Event()
        self.pipeline: Pipeline
        self.canary: CanaryDeployer | None = None
        self.prometheus_feed: PrometheusFeed | None = None  # analysis.source: prometheus
        self._proxy_counts: dict[str, int] = {}
        self._branch = BranchWatch()  # deletions recorded once; status shows the branch's state
        self._hook_timer: asyncio.TimerHandle | None = None
        self._fleet_started = False
        self._hook_last = -WEBHOOK_WINDOW_S
        self._hook_reasons = 0
        self.listeners: list[GuardedListener] = []  # fleet, bootstrap, api (reconciler.net)

    # -- helpers used by the API -------------------------------------------------------------

    def _status_facts(self) -> dict[str, Any]:
        problems = self.health_problems()
        return {
            "branchState": self._branch.to_dict(),
            "auditAnchor": self.anchoring.status(),
            "webhooksRejected": self._webhook_audit.status(),
            "health": {"status": "degraded" if problems else "ok", "problems": problems,
                       "listeners": {x.name: x.status() for x in self.listeners}},
        }

    def health_problems(self) -> list[str]:
        """What keeps this controller from working fully (healthz and status say degraded)."""
        problems = [p for p in (x.problem() for x in self.listeners) if p]
        problems += self.anchoring.degraded() if hasattr(self, "anchoring") else []
        problems += self.store_health.problems() if hasattr(self, "store_health") else []
        fetch = self.coordinator.status if hasattr(self, "coordinator") else None
        if fetch is not None and fetch.consecutive_failures:
            problems.append(f"fetch failing ({fetch.consecutive_failures} in a row): "
                            f"{fetch.last_error}")
        return problems

    def audit_now(self, actor: str, kind: str, subject: str, data: dict[str, Any]) -> None:
        self.audit.append(actor, kind, subject, data, now=self.clock(), oversize="truncate")

    def known_proxies(self) -> list[KnownProxy]:
        connected = set(self.fleet.connected())
        return [KnownProxy(e.proxy_id, e.service, e.namespace, dict(e.labels),
                           e.proxy_id in connected)
                for e in self.fleet.ledger() if e.service]

    def now(self) -> datetime:
        return self.clock()

    def ca_fingerprint(self) -> str:
        return self.ca.bundle_fingerprint()

    def refresh(self, actor: str) -> None:
        """`meshcd refresh` / POST /api/refresh: audited, then a fetch now."""
        self.audit_now(actor, "manual.refresh", self.settings.branch, {})
        self.coordinator.refresh(f"manual:{actor}")

    async def metrics_text(self) -> bytes:
        self._proxy_counts = self.fleet.counts()  # read on the loop, rendered in a thread
        return await asyncio.to_thread(self.metrics.render)

    # -- start-up pieces ---------------------------------------------------------------------

    def _open_store(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        url = s.store_url or sqlite_url(s.data_dir)
        self.engine = open_engine(url)
        self.store_health = watch_store(self.engine, StoreHealth(), time.time)  # full, damaged
        self.audit = AuditLog(self.engine)
        self.tokens = JoinTokens(self.engine)
        self.revisions = RevisionStore(self.engine)
        self.ledger_store = LedgerStore(self.engine)

    def _open_source(self) -> None:
        s = self.settings
        try:
            remote = parse_remote_url(s.repo_url, base_dir=s.base_dir)
            creds = credentials_from_settings(s.credentials, base_dir=s.base_dir)
            self.mirror = GitMirror(s.data_dir / "mirror.git", remote, creds)
            self.policy = SignaturePolicy.from_file(s.signature_mode, s.allowed_signers,
                                                    s.openpgp_keyring)
        except (OSError, ValueError) as exc:
            raise StartupError(f"source settings: {exc}") from None
        except SourceError as exc:
            if not exc.temporary:
                raise StartupError(f"source settings: {exc}") from None
            raise
        self.mirror_display = remote.display

    def _trust_domain(self) -> str:
        """Settings, else what the store remembers, else the Mesh at the branch head."""
        s = self.settings
        if s.trust_domain:
            return s.trust_domain
        known = self.revisions.get_state("trust_domain")
        if isinstance(known, str) and known:
            return known
        try:
            self.mirror.fetch()
        except Exception as exc:
            raise StartupError(f"cannot fetch {self.mirror_display} to learn the trust domain "
                               f"({exc}); set trust_domain in the settings") from None
        head = self.mirror.resolve(s.branch)
        if head is None:
            raise StartupError(f"branch {s.branch!r} does not exist yet; set trust_domain in "
                               "the settings to start without it")
        result = validate(GitTreeSource(self.mirror.open_repository(), head))
        mesh = result.model.mesh
        if mesh is None or not mesh.trust_domain:
            raise StartupError(f"the head of {s.branch!r} has no valid Mesh document; set "
                               "trust_domain in the settings")
        return mesh.trust_domain

    # -- callbacks -----------------------------------------------------------------------------

    def _after_fetch(self, outcome: FetchOutcome[Any]) -> None:
        """On the fetch worker thread: record what the branch did, hand new work to the loop."""
        if not outcome.ok:
            self.metrics.fetches.labels("error").inc()
            err = outcome.error
            try:
                self.audit.append("scheduler", "fetch.failed", self.mirror_display, {
                    "error": self.coordinator.status.last_error or str(err),
                    "temporary": err.temporary if isinstance(err, SourceError) else True,
                    "reasons": list(outcome.reasons[:20]),
                    "consecutive_failures": self.coordinator.status.consecutive_failures,
                }, now=self.clock())
            except StoreError as exc:  # a full disk: status shows the failed fetch
                log.warning("fetch failed and cannot be recorded: %s", exc)
            return
        self.metrics.fetches.labels("ok").inc()
        obs = observe_branch(self.mirror, self.settings.branch, self.pipeline.last_recorded,
                             self.policy, now=int(self.clock().timestamp()))
        event = self._branch.follow(obs.event, now=self.clock().timestamp())
        if event is None:
            return  # a deletion already recorded: once, not at every poll
        if isinstance(event, BranchRecreated):  # back at the commit it had: nothing to deploy
            self.audit.append("controller", "source.branch_recreated", self.settings.branch, {
                "commit": event.new, "trigger": trigger_of(outcome.reasons)}, now=self.clock())
            return
        self.pipeline.observe(obs, outcome.reasons)

    async def _watch_fleet(self, events: asyncio.Queue[FleetEvent]) -> None:
        """The controller's share of the fleet's events: answer each hello, count ACKs and
        NACKs. (The canary deployer takes the fleet's events on its own queue.)"""
        answering: set[asyncio.Task[None]] = set()
        while True:
            event = await events.get()
            if isinstance(event, Connected):
                if event.checkpoint is not None:  # a proxy's word on the audit chain's head
                    self.anchoring.observe_soon(event.checkpoint, event.proxy_id)
                task = asyncio.create_task(self._answer_hello(event))
                answering.add(task)
                task.add_done_callback(answering.discard)
            elif isinstance(event, Acked) and event.seconds is not None:
                self.metrics.push_to_ack.observe(event.seconds)
            elif isinstance(event, Nacked):
                self.metrics.nacks.inc()

    async def _answer_hello(self, hello: Connected) -> None:
        desired = None
        # mid-rollout a target keeps what the rollout gave it (old or new)
        if self.canary is None or not self.canary.is_target(hello.proxy_id):
            proxy = KnownProxy(hello.proxy_id, hello.service, hello.namespace,
                               dict(hello.labels), True)
            try:
                desired = await asyncio.to_thread(self.pipeline.snapshot_for, proxy)
            except Exception:
                log.exception("rendering the hello answer of %s failed", hello.proxy_id)
        self.fleet.answer_hello(hello, desired)

    async def _push_revert(self, target: Revision, actor: str, reason: str) -> str:
        from reconciler.source import push_revert

        expected = self.pipeline.last_recorded
        if expected is None:
            raise RollbackRefused("the controller has not seen the branch yet; cannot revert")
        message = (f"Revert to revision {target.id} ({target.commit[:12]})\n\n"
                   f"Rolled back by {actor} with `meshcd rollback --revert`"
                   + (f": {reason}" if reason else "") + ".\n")
        try:
            result = await asyncio.to_thread(
                push_revert, self.mirror, self.settings.branch, expected_head=expected,
                target_commit=target.commit, message=message, now=int(time.time()))
        except Exception as exc:
            raise RollbackRefused(f"revert not pushed: {exc}") from None
        await asyncio.to_thread(self.audit_now, actor, "rollback.revert_pushed", result.commit, {
            "target": target.id, "parent": result.parent, "branch": self.settings.branch})
        return str(result.commit)

    def _webhook_router(self) -> Any:
        s = self.settings
        from webhooks.receiver import make_router
        from webhooks.settings import ReceiverSettings, ReceiverSettingsError

        try:
            rs = ReceiverSettings.from_sources(
                watched_repo=s.repo_url if "://" in s.repo_url or s.repo_url.startswith("/")
                else self.mirror_display,
                watched_branch=s.branch, secret_sources=dict(s.webhook_secrets),
                max_body_bytes=s.webhook_max_body_bytes, body_timeout_s=s.webhook_body_timeout_s)
        except ReceiverSettingsError as exc:
            raise StartupError(f"webhooks: {exc}") from None

        def on_update(update: Any) -> None:
            self._webhook_refresh(f"webhook:{update.forge}")

        return make_router(rs, on_update=on_update, on_audit=self._webhook_audit.on_delivery)

    def _webhook_refresh(self, reason: str) -> None:
        """On the loop. The first push after a quiet spell fetches at once; pushes within
        WEBHOOK_WINDOW_S of a fetch share one trailing fetch at the end of the window. So a
        single push deploys without delay and 100 pushes in a second cost two fetches (the
        coordinator also folds requests that arrive while a fetch runs into one)."""
        now = self.loop.time()
        if self._hook_timer is not None:
            self._hook_reasons += 1
            return
        if now - self._hook_last >= WEBHOOK_WINDOW_S:
            self._hook_last = now
            self.coordinator.refresh(reason)
            return
        self._hook_reasons = 1
        self._hook_timer = self.loop.call_later(self._hook_last + WEBHOOK_WINDOW_S - now,
                                                self._webhook_trailing, reason)

    def _webhook_trailing(self, reason: str) -> None:
        self._hook_timer = None
        self._hook_last = self.loop.time()
        n, self._hook_reasons = self._hook_reasons, 0
        with contextlib.suppress(Exception):  # closed during shutdown
            self.coordinator.refresh(reason if n == 1 else f"{reason} (+{n - 1} more)")

    # -- run -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open_store)
        self._open_source()
        self.epoch = await asyncio.to_thread(self.revisions.next_epoch)
        self.admin_token = ensure_admin_token(s.data_dir)
        trust_domain = await asyncio.to_thread(self._trust_domain)
        await asyncio.to_thread(self.revisions.set_state, "trust_domain", trust_domain)
        try:
            self.ca = await asyncio.to_thread(CertificateAuthority.load_or_create, s.data_dir,
                                              trust_domain, now=self.clock())
        except Exception as exc:
            raise StartupError(f"CA: {exc}") from None
        self._webhook_audit = WebhookAudit(  # refused deliveries counted, not one record each
            self.audit, clock=self.clock, count=self.metrics.webhooks, forges=FORGES,
            interval_s=s.webhook_rejected_summary_s, samples=s.webhook_rejected_samples)
        try:
            self.anchoring = await asyncio.to_thread(AuditAnchoring, s.data_dir, self.audit,
                                                     self.clock)
        except (OSError, CheckpointError) as exc:
            raise StartupError(f"audit anchor: {exc}") from None
        try:  # before this start appends anything
            await asyncio.to_thread(self.anchoring.check)
        except Exception as exc:  # the periodic check tries again; start anyway
            log.error("audit anchor check failed: %s", exc)
        self.webhook_router = self._webhook_router()
        await asyncio.to_thread(self.audit.append, "controller", "controller.started",
                                self.mirror_display, {
                                    "epoch": self.epoch, "pid": os.getpid(),
                                    "branch": s.branch, "trust_domain": trust_domain,
                                    "admin_token_id": token_id(self.admin_token)},
                                now=self.clock())
        hostnames, ips = _cert_names(s.fleet.host, s.advertise_host)
        self.fleet = FleetServer(self.ca, self.audit, self.ledger_store, epoch=self.epoch,
                                 clock=self.clock, hostnames=hostnames, ips=ips,
                                 answers_hellos=True)
        fleet_events: asyncio.Queue[FleetEvent] = asyncio.Queue()
        self.fleet.subscribe(fleet_events, stats=False)
        deployer: Deployer
        if s.deploy_strategy == "canary":
            self.canary = deployer = CanaryDeployer(
                self.fleet, self.audit, self.revisions, clock=self.clock,
                preset=s.rollout_preset, ack_timeout=s.deploy_timeout_s,
                stats_source="prometheus" if s.analysis_source == "prometheus" else "fleet")
        else:
            deployer = AllAtOnceDeployer(self.fleet, timeout=s.deploy_timeout_s)
        self.pipeline = Pipeline(
            store=self.revisions, audit=self.audit, open_repo=self.mirror.open_repository,
            known_proxies=self.known_proxies, deployer=deployer,
            clock=self.clock, branch=s.branch, trust_domain=trust_domain,
            on_reconciled=self.metrics.reconcile.observe,
            current_desired=self.fleet.desired, fleet_assign=self.fleet.set_desired)
        self.commands = Commands(
            self.pipeline, deployer, self.revisions, self.audit, self.clock, s.branch,
            rollout_running=lambda: self.canary is not None and self.canary.active is not None,
            push_revert=self._push_revert)
        self.view = ControllerView(
            Identity(s.deploy_strategy, self.mirror_display, s.branch, trust_domain, self.epoch),
            self.pipeline, self.revisions, self.fleet, self.canary,
            fetch_status=lambda: self.coordinator.status,
            urls=lambda: {"api": self.api_url, "fleet": self.fleet.url,
                          "bootstrap": self.bootstrap_url},
            facts=self._status_facts)
        if self.canary is not None and s.analysis_source == "prometheus":
            from reconciler.analysis.prometheus import PrometheusProvider

            self.prometheus_feed = PrometheusFeed(
                self.canary, PrometheusProvider(str(s.prometheus_url),
                                                direction=s.prometheus_direction),
                audit=self.audit_now, interval_s=s.prometheus_interval_s,
                lag_s=s.prometheus_lag_s)
            self.prometheus_feed.start()
        self.metrics.add_sources(
            revisions=self.revisions.counts, proxies=lambda: self._proxy_counts,
            epoch=lambda: self.epoch,
            fetch_failures=lambda: self.coordinator.status.consecutive_failures)
        await self.pipeline.restore()
        self.coordinator: FetchCoordinator[Any] = FetchCoordinator(
            self.mirror.fetch, on_outcome=self._after_fetch)
        self.schedule = PollingSchedule(self.coordinator.poll, interval=s.poll_interval,
                                        jitter=s.poll_jitter)
        async with contextlib.AsyncExitStack() as stack:
            # Popped in reverse: the fetches stop before the pipeline, the pipeline, the
            # Prometheus feed and the canary before the fleet (whose closing streams must not
            # reach a rollout), the audit record and the engine last.
            stack.push_async_callback(self._quietly, "engine", asyncio.to_thread,
                                      self.engine.dispose)
            stack.push_async_callback(self._quietly, "stopped record", asyncio.to_thread,
                                      self._audit_stopped)
            stack.push_async_callback(self._quietly, "fleet", self._stop_fleet)
            if self.canary is not None:
                stack.push_async_callback(self._quietly, "canary", self.canary.stop)
            if self.prometheus_feed is not None:
                stack.push_async_callback(self._quietly, "prometheus feed",
                                          self._stop_prometheus_feed)
            stack.push_async_callback(self._quietly, "pipeline", self.pipeline.stop)
            stack.push_async_callback(self._quietly, "webhook records",
                                      self._flush_webhook_records)
            await self.fleet.start(s.fleet.host, s.fleet.port, advertise=s.advertise_host,
                                   limits=s.fleet_limits)
            self._fleet_started = True
            self.fleet.set_desired(self.pipeline.deployed_assignments())
            boot = BootstrapServer(self.ca, self.tokens, self.audit, clock=self.clock,
                                   fleet_url=lambda: self.fleet.url,
                                   credentials=self.fleet.credentials)
            await boot.start(s.bootstrap.host, s.bootstrap.port, advertise=s.advertise_host,
                             limits=s.bootstrap_limits)
            stack.push_async_callback(self._quietly, "bootstrap", boot.stop)
            self.listeners = [x for x in (self.fleet.listener, boot.listener) if x is not None]
            self.bootstrap_url = boot.url
            self.pipeline.start()
            from reconciler.auth import ApiTokens, install
            from reconciler.controller.api import make_app
            from reconciler.pages import PagesSettings, make_pages_router

            app = make_app(self)
            self.metrics.registry.register(ListenerCollector(lambda: self.listeners))
            api_tokens = ApiTokens(self.audit.engine)  # same database as the audit log
            await asyncio.to_thread(api_tokens.bootstrap_admin, self.admin_token,
                                    now=self.clock())
            install(app, api_tokens)
            app.include_router(make_pages_router(PagesView(self.view, self.commands, self.loop),
                                                 self.audit,
                                                 api_tokens, PagesSettings(clock=self.clock)))
            sock = _listen(s.api.host, s.api.port)
            api_port = sock.getsockname()[1]
            host_text = f"[{s.api.host}]" if ":" in s.api.host else s.api.host
            if s.api.host in ("0.0.0.0", "::"):
                host_text = "127.0.0.1"
            self.api_url = f"http://{host_text}:{api_port}"
            self.api_listener = GuardedListener("api", sock, s.api_limits)  # caps, timeouts
            self.listeners.append(self.api_listener)
            config = uvicorn.Config(TrackRequests(app, self.api_listener), log_level="warning",
                                    lifespan="off", access_log=False, timeout_graceful_shutdown=5,
                                    timeout_keep_alive=s.api_limits.idle_timeout_s or 5)  # type: ignore[arg-type]
            server = _QuietServer(config)
            tasks = [asyncio.create_task(server.serve(sockets=[])),
                     asyncio.create_task(self._webhook_audit.run()),
                     # hellos that came before this are on the queue and answered now
                     asyncio.create_task(self._watch_fleet(fleet_events)),
                     asyncio.create_task(self.anchoring.run(self.fleet))]
            stack.push_async_callback(self._stop_api, server, tasks)
            stack.callback(self._cancel_webhook_timer)
            stack.push_async_callback(self._quietly, "fetches", asyncio.to_thread,
                                      self.coordinator.close, 30.0)
            stack.push_async_callback(self._quietly, "poll", asyncio.to_thread,
                                      self.schedule.stop, False)
            while not server.started:
                if tasks[0].done():
                    tasks[0].result()
                    raise StartupError("the API server stopped during start-up")
                await asyncio.sleep(0.01)
            tasks.append(asyncio.create_task(
                self.api_listener.serve(uvicorn_handler(server), close=True)))
            self.schedule.start()
            write_address(s.data_dir, {
                "api": self.api_url, "fleet": self.fleet.url, "bootstrap": self.bootstrap_url,
                "pid": os.getpid(), "epoch": self.epoch,
                "caFingerprint": "sha256:" + self.ca.bundle_fingerprint()})
            print(f"meshcd serve: epoch {self.epoch}; API {self.api_url}; fleet {self.fleet.url}; "
                  f"bootstrap {self.bootstrap_url}; watching {self.mirror_display} "
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
        if self._hook_timer is not None:
            self._hook_timer.cancel()

    async def _stop_fleet(self) -> None:
        if self._fleet_started:
            await self.fleet.stop()

    async def _stop_prometheus_feed(self) -> None:
        feed = self.prometheus_feed
        if feed is not None:
            await feed.stop()
            feed.provider.close()

    async def _flush_webhook_records(self) -> None:
        await self._webhook_audit.flush(final=True)

    def _audit_stopped(self) -> None:
        self.audit.append("controller", "controller.stopped", self.mirror_display,
                          {"epoch": self.epoch}, now=self.clock())
        self.anchoring.tick()  # the anchor file covers the last record


def data_dir_of(settings: Settings) -> Path:
    return settings.data_dir
