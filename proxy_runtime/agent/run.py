"""One managed proxy process: the runtime (serving its persisted config at once), the admin
API (with `/agent`), the fleet agent, and SIGTERM/SIGINT drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

from proxy_runtime.admin import json_body, start_admin
from proxy_runtime.agent.client import FleetAgent, describe
from proxy_runtime.agent.identity import StateDir
from proxy_runtime.dataplane.downstream import ServerLimits
from proxy_runtime.runtime import Nack, ProxyRuntime
from proxy_runtime.serve import admin_routes

log = logging.getLogger("meshcd.agent")


class ManagedProxy:
    def __init__(self, state_dir: StateDir, *, fleet_url: str, proxy_id: str, service: str,
                 namespace: str, labels: dict[str, str], admin_address: str, admin_port: int,
                 drain_seconds: float, limits: ServerLimits | None = None,
                 reconnect_max: float = 30.0, dataplane: str = "builtin",
                 envoy_binary: Path | None = None) -> None:
        self.dir = state_dir
        self.fleet_url = fleet_url
        self.proxy_id, self.service, self.namespace = proxy_id, service, namespace
        self.labels = labels
        self.admin_address, self.admin_port = admin_address, admin_port
        self.drain_seconds = drain_seconds
        self.limits = limits
        self.reconnect_max = reconnect_max
        self.dataplane = dataplane
        self.envoy_binary = envoy_binary

    async def run(self) -> int:
        if self.dataplane in ("envoy", "envoy-external"):
            return await self._run_envoy()
        loop = asyncio.get_running_loop()
        runtime = ProxyRuntime(loop, state_dir=self.dir.path, limits=self.limits,
                               drain_seconds=self.drain_seconds)
        runtime.stats.proxy_id = self.proxy_id  # labels mesh_config_info (docs/proxy-runtime.md)
        runtime.stats.service = f"{self.service}.{self.namespace}"
        persisted = await runtime.load_persisted()  # static stability: serve before dialling
        if isinstance(persisted, Nack):
            log.error("the persisted snapshot is refused (%s); waiting for the controller",
                      persisted.error)
        agent = FleetAgent(runtime, self.dir, fleet_url=self.fleet_url, proxy_id=self.proxy_id,
                           service=self.service, namespace=self.namespace, labels=self.labels,
                           backoff_cap=self.reconnect_max)
        routes = admin_routes(runtime)
        routes["/agent"] = lambda _q: json_body(describe(agent))
        admin = await start_admin(routes, self.admin_address, self.admin_port)
        admin_port = admin.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        serving = runtime.active.version[:12] if runtime.active is not None else "nothing yet"
        print(f"meshcd proxy {self.proxy_id}: managed by {self.fleet_url}; admin on "
              f"{self.admin_address}:{admin_port}; serving {serving} "
              f"(config {(agent.config_version or 'none')[:12]})", flush=True)
        agent_task = loop.create_task(agent.run())
        stopped = asyncio.Event()
        tasks: set[asyncio.Task[Any]] = set()

        def on_term() -> None:
            if not stopped.is_set() and not tasks:
                task = loop.create_task(self._drain(runtime, agent, agent_task, admin, stopped))
                tasks.add(task)

        loop.add_signal_handler(signal.SIGTERM, on_term)
        loop.add_signal_handler(signal.SIGINT, on_term)
        await stopped.wait()
        return 0

    async def _drain(self, runtime: ProxyRuntime, agent: FleetAgent, agent_task: asyncio.Task[None],
                     admin: Any, stopped: asyncio.Event) -> None:
        print("meshcd proxy: draining", flush=True)
        await agent.stop()
        agent_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await agent_task
        clean = await runtime.drain(self.drain_seconds)
        admin.close()
        print(f"meshcd proxy: drained ({'clean' if clean else 'deadline reached'})", flush=True)
        stopped.set()

    async def _run_envoy(self) -> int:
        """The agent as Envoy's control plane: ADS/SDS on a private Unix socket, Envoy
        supervised, the fleet stream unchanged (docs/envoy.md)."""
        from proxy_runtime.envoy.dataplane import EnvoyDataPlane

        loop = asyncio.get_running_loop()
        plane = EnvoyDataPlane(self.dir.path, proxy_id=self.proxy_id,
                               service=f"{self.service}.{self.namespace}",
                               binary=(self.envoy_binary if self.dataplane == "envoy"
                                       else None),
                               drain_seconds=self.drain_seconds)
        persisted = await plane.start()  # static stability: Envoy gets the last good at once
        if isinstance(persisted, Nack):
            log.error("the persisted snapshot is refused (%s); waiting for the controller",
                      persisted.error)
        agent = FleetAgent(plane, self.dir, fleet_url=self.fleet_url, proxy_id=self.proxy_id,
                           service=self.service, namespace=self.namespace, labels=self.labels,
                           backoff_cap=self.reconnect_max, dataplane_ready=plane.ready)
        bounces: set[asyncio.Task[None]] = set()

        def envoy_exited() -> None:
            # Envoy died: the controller sees this proxy DISCONNECTED until Envoy is back on
            # the last good snapshot, then SYNCED (hello with the running version).
            plane.control.synced.clear()
            task = loop.create_task(agent.reconnect())
            bounces.add(task)
            task.add_done_callback(bounces.discard)

        plane.supervisor.on_exit = envoy_exited

        def ready(_q: dict[str, list[str]]) -> tuple[int, bytes, bytes]:
            if plane.version is None:
                return 503, b"text/plain", b"no config applied yet\n"
            return 200, b"text/plain", b"ready " + plane.version.encode() + b"\n"

        def window(_q: dict[str, list[str]]) -> tuple[int, bytes, bytes]:
            return json_body(plane.stats.window.as_document(time.time()))

        def metrics(_q: dict[str, list[str]]) -> tuple[int, bytes, bytes]:
            return 200, b"text/plain; version=0.0.4; charset=utf-8", plane.prometheus_text()

        routes: dict[str, Any] = {
            "/agent": lambda _q: json_body(describe(agent)), "/ready": ready,
            "/healthz": lambda _q: (200, b"text/plain", b"ok\n"),
            "/config_dump": lambda _q: json_body(plane.config_dump()),
            "/stats/window": window, "/metrics": metrics}
        admin = await start_admin(routes, self.admin_address, self.admin_port)
        admin_port = admin.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        if self.dataplane == "envoy-external":
            print("meshcd proxy: run Envoy with: " + " ".join(plane.supervisor.command()),
                  flush=True)
            envoy = "your Envoy"
        else:
            envoy = (f"Envoy (pid {plane.supervisor.pid}, admin "
                     f"127.0.0.1:{plane.supervisor.admin_port})")
        print(f"meshcd proxy {self.proxy_id}: {envoy} managed by {self.fleet_url}; agent "
              f"admin on {self.admin_address}:{admin_port}; serving "
              f"{(plane.version or 'nothing yet')[:12]}", flush=True)
        agent_task = loop.create_task(agent.run())
        stopped = asyncio.Event()
        tasks: set[asyncio.Task[Any]] = set()

        async def drain() -> None:
            print("meshcd proxy: draining Envoy", flush=True)
            await agent.stop()
            agent_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await agent_task
            await plane.drain(self.drain_seconds)
            admin.close()
            print("meshcd proxy: drained", flush=True)
            stopped.set()

        def on_term() -> None:
            if not stopped.is_set() and not tasks:
                tasks.add(loop.create_task(drain()))

        loop.add_signal_handler(signal.SIGTERM, on_term)
        loop.add_signal_handler(signal.SIGINT, on_term)
        await stopped.wait()
        return 0
