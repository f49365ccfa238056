"""Runs Envoy: starts it with the agent's bootstrap, restarts it at once when it dies, adopts
an Envoy a previous agent left running (the agent died; Envoy kept serving), and drains it on
SIGTERM. Envoy runs in its own session so a signal meant for the agent does not reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy_runtime.envoy.bootstrap import envoy_args

log = logging.getLogger("meshcd.envoy")

PID_FILE = "envoy.pid"
MAX_LOG_BYTES = 64 * 1024 * 1024  # envoy.log is rolled over at a (re)start past this
RESTART_DELAYS = (0.0, 0.1, 0.5, 1.0, 2.0)  # seconds before restart n (then the last)


def restart_delay(recent_restarts: int) -> float:
    """Pure: the wait before the next start, growing only when Envoy keeps dying."""
    return RESTART_DELAYS[min(recent_restarts, len(RESTART_DELAYS) - 1)]


def active_requests(stats_text: str) -> int:
    """Pure: requests in flight on meshcd's connection managers, from Envoy's `/stats` text
    (`http.<prefix>.downstream_rq_active: N` lines; Envoy's admin listener left out)."""
    total = 0
    for line in stats_text.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("http.") and not name.startswith("http.admin."):
            with contextlib.suppress(ValueError):
                total += int(value.strip())
    return total


class EnvoySupervisor:
    def __init__(self, binary: Path | None, workdir: Path, bootstrap: dict[str, Any], *,
                 concurrency: int = 2, log_level: str = "warning",
                 drain_seconds: float = 10.0) -> None:
        """`binary` None: an Envoy someone else runs with our bootstrap (`command()`); it is
        neither started, restarted nor stopped here."""
        self.binary = binary
        self.workdir = workdir
        self.bootstrap = bootstrap
        self.concurrency = concurrency
        self.log_level = log_level
        self.drain_seconds = drain_seconds
        self.config_path = workdir / "envoy.json"
        self.admin_path = workdir / "admin-address"
        self.pid_path = workdir / PID_FILE
        self.pid: int | None = None
        self.admin_port: int | None = None
        self.starts = 0
        self.adopted = False
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._recent: list[float] = []
        self.on_exit: Callable[[], None] | None = None  # called when Envoy died on its own

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.bootstrap, indent=1))
        tmp.replace(self.config_path)
        if self.binary is None:
            log.info("not running Envoy: start it with %s", " ".join(self.command()))
            return
        old = self._running_envoy()
        if old is not None:
            self.pid, self.adopted = old, True
            self.admin_port = self._read_admin_port()
            log.info("adopted the running Envoy (pid %d)", old)
        else:
            await self._spawn()
        self._task = asyncio.create_task(self._watch())

    def command(self) -> list[str]:
        """The command line that runs Envoy on the agent's bootstrap."""
        return [str(self.binary or "envoy"), *envoy_args(
            str(self.config_path), str(self.admin_path), concurrency=self.concurrency,
            log_level=self.log_level, drain_seconds=self.drain_seconds)]

    def _running_envoy(self) -> int | None:
        """The Envoy a previous agent started with this config, if it still runs."""
        try:
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if str(self.config_path).encode() in cmdline else None

    def _read_admin_port(self) -> int | None:
        try:
            return int(self.admin_path.read_text().strip().rpartition(":")[2])
        except (OSError, ValueError):
            return None

    async def _spawn(self) -> None:
        self.admin_path.unlink(missing_ok=True)
        log_path = self.workdir / "envoy.log"
        with contextlib.suppress(OSError):
            if log_path.stat().st_size > MAX_LOG_BYTES:  # keep one older file, no more
                log_path.replace(log_path.with_suffix(".log.1"))
        logfile = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL, stdout=logfile, stderr=logfile,
                start_new_session=True)
        finally:
            logfile.close()
        self.pid = self._proc.pid
        self.adopted = False
        self.starts += 1
        self.pid_path.write_text(str(self.pid))
        for _ in range(200):  # the admin port Envoy chose, once it is up
            port = self._read_admin_port()
            if port is not None or self._proc.returncode is not None:
                self.admin_port = port
                break
            await asyncio.sleep(0.025)

    async def _wait_exit(self) -> None:
        if self._proc is not None and not self.adopted:
            await self._proc.wait()
            return
        while self.pid is not None:  # adopted: not our child, poll it
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.1)

    async def _watch(self) -> None:
        while not self._stopping:
            await self._wait_exit()
            if self._stopping:
                return
            code = self._proc.returncode if self._proc is not None and not self.adopted else None
            now = time.monotonic()
            self._recent = [t for t in self._recent if now - t < 30.0] + [now]
            delay = restart_delay(len(self._recent) - 1)
            log.warning("Envoy (pid %s) exited (%s); restarting in %.1f s", self.pid, code, delay)
            if self.on_exit is not None:
                self.on_exit()
            await asyncio.sleep(delay)
            if not self._stopping:
                await self._spawn()

    def admin_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def current_admin_port(self) -> int | None:
        """The admin port of the Envoy on our bootstrap (an external one writes it too, with
        the `--admin-address-path` of `command()`)."""
        if self.binary is None:
            self.admin_port = self._read_admin_port()
        return self.admin_port

    async def drain(self, seconds: float) -> None:
        """Drain, then stop: Envoy's listeners drain (HTTP/1 answers with `Connection: close`,
        HTTP/2 gets GOAWAY), the requests in flight finish (up to `seconds`), then SIGTERM."""
        self._stopping = True
        if self.binary is None:
            return  # not ours to drain
        if self.admin_port is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._post, "/drain_listeners?graceful")
            while loop.time() < deadline:
                try:
                    active = await asyncio.to_thread(self._active_requests)
                except OSError:
                    break
                if active == 0:
                    break
                await asyncio.sleep(0.1)
        await self.stop()

    def _active_requests(self) -> int:
        url = self.admin_url("/stats?filter=downstream_rq_active$")
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            text = resp.read().decode()
        return active_requests(text)

    def _post(self, path: str) -> None:
        req = urllib.request.Request(self.admin_url(path), method="POST")
        with urllib.request.urlopen(req, timeout=2.0) as resp:
            resp.read()

    async def stop(self) -> None:
        self._stopping = True
        if self.binary is None:
            return
        if self._task is not None:
            self._task.cancel()
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                if self._proc is not None and self._proc.returncode is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            if self._proc is not None and not self.adopted:
                with contextlib.suppress(ProcessLookupError):
                    await self._proc.wait()
        self.pid_path.unlink(missing_ok=True)
