"""Run one proxy process: the runtime, the admin API and the signal handlers.
Used by `meshcd proxy run` (static mode); the agent (#5) will reuse `ProxyProcess`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from proxy_runtime.admin import Route, json_body, start_admin
from proxy_runtime.dataplane.downstream import ServerLimits
from proxy_runtime.metrics import MetricsExporter
from proxy_runtime.runtime import Ack, Nack, ProxyRuntime

log = logging.getLogger("meshcd.proxy")


def admin_routes(runtime: ProxyRuntime) -> dict[str, Route]:
    exporter = MetricsExporter(runtime.stats)

    def healthz(_: dict[str, list[str]]) -> tuple[int, bytes, bytes]:
        return 200, b"text/plain", b"ok\n"

    def ready(_: dict[str, list[str]]) -> tuple[int, bytes, bytes]:
        if runtime.active is None:
            return 503, b"text/plain", b"no config applied yet\n"
        if runtime.draining:
            return 503, b"text/plain", b"draining\n"
        return 200, b"text/plain", b"ready " + runtime.active.version.encode() + b"\n"

    def config_dump(_: dict[str, list[str]]) -> tuple[int, bytes, bytes]:
        return json_body(runtime.config_dump())

    def metrics(_: dict[str, list[str]]) -> tuple[int, bytes, bytes]:
        return 200, b"text/plain; version=0.0.4; charset=utf-8", exporter.render()

    def window(query: dict[str, list[str]]) -> tuple[int, bytes, bytes]:
        seconds = None
        if "seconds" in query:
            try:
                seconds = max(1, int(query["seconds"][0]))
            except ValueError:
                return 400, b"text/plain", b"seconds must be an integer\n"
        now = time.time()
        return json_body(runtime.stats.window.as_document(now, seconds))

    return {"/healthz": healthz, "/ready": ready, "/config_dump": config_dump,
            "/metrics": metrics, "/stats/window": window}


def release_startup_memory() -> None:
    """Give the heap freed after imports and config compilation back to the OS: a proxy's
    idle RSS is what a sidecar costs per pod."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    gc.freeze()  # startup objects live forever: keep them out of every later collection
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
            ctypes.CDLL(name).malloc_trim(0)


class ProxyProcess:
    def __init__(self, *, config_path: Path | None, state_dir: Path | None, admin_address: str,
                 admin_port: int, drain_seconds: float, limits: ServerLimits | None = None) -> None:
        self.config_path = config_path
        self.state_dir = state_dir
        self.admin_address = admin_address
        self.admin_port = admin_port
        self.drain_seconds = drain_seconds
        self.limits = limits
        self.stopped: asyncio.Event | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        runtime = ProxyRuntime(loop, state_dir=self.state_dir, limits=self.limits,
                               drain_seconds=self.drain_seconds)
        result: Ack | Nack | None = None
        if self.config_path is not None:
            result = await runtime.apply(self.config_path.read_bytes())
        else:
            result = await runtime.load_persisted()
        if result is None:
            print("error: no --config given and no persisted snapshot in the state dir", file=sys.stderr)
            return 2
        if isinstance(result, Nack):
            print(f"error: config refused: {result.error}", file=sys.stderr)
            return 2
        admin = await start_admin(admin_routes(runtime), self.admin_address, self.admin_port)
        release_startup_memory()
        admin_port = admin.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        listeners = " ".join(f"{k[0]}={li.port}" for k, li in runtime.listeners.items())
        print(f"meshcd proxy: config {result.version[:12]} applied; admin on "
              f"{self.admin_address}:{admin_port}; listeners {listeners}", flush=True)
        self.stopped = asyncio.Event()
        stopped = self.stopped

        tasks: set[asyncio.Task[None]] = set()

        def spawn(coro: Any) -> None:
            task = loop.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def on_term() -> None:
            spawn(self._drain(runtime, admin, stopped))

        def on_hup() -> None:
            spawn(self._reload(runtime))

        loop.add_signal_handler(signal.SIGTERM, on_term)
        loop.add_signal_handler(signal.SIGINT, on_term)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        await stopped.wait()
        return 0

    async def _reload(self, runtime: ProxyRuntime) -> None:
        if self.config_path is None:
            log.warning("SIGHUP: no --config file to reload")
            return
        try:
            data = self.config_path.read_bytes()
        except OSError as exc:
            log.error("SIGHUP: cannot read %s: %s", self.config_path, exc)
            return
        result = await runtime.apply(data)
        if isinstance(result, Ack):
            print(f"meshcd proxy: reloaded config {result.version[:12]}", flush=True)
        else:
            print(f"meshcd proxy: reload NACK: {result.error}", flush=True)

    async def _drain(self, runtime: ProxyRuntime, admin: Any, stopped: asyncio.Event) -> None:
        if runtime.draining:
            return
        print("meshcd proxy: draining", flush=True)
        clean = await runtime.drain(self.drain_seconds)
        admin.close()
        print(f"meshcd proxy: drained ({'clean' if clean else 'deadline reached'})", flush=True)
        stopped.set()
