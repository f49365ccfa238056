"""Envoy as the agent's data plane (run by the agent, or, with `binary=None`, an Envoy someone
else runs on the agent's bootstrap): `apply(document)` translates the native snapshot, pushes it
over ADS and answers Ack only when Envoy acked every resource type, Nack with Envoy's
error_detail otherwise (Envoy keeps the last good config). The last good snapshot is kept in
the state dir (without the identity) and served at once on start (static stability)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy_runtime.config import SnapshotError, compile_snapshot, parse_snapshot, snapshot_to_json
from proxy_runtime.config import model as pc
from proxy_runtime.config.files import dump_snapshot_file, loads_snapshot
from proxy_runtime.envoy.bootstrap import bootstrap
from proxy_runtime.envoy.server import (
    EnvoyControl,
    TlsMaterial,
    socket_path_for,
    start_server,
)
from proxy_runtime.envoy.supervisor import EnvoySupervisor
from proxy_runtime.envoy.translate import translate
from proxy_runtime.envoy.xds import Acked
from proxy_runtime.metrics import MetricsExporter, Stats
from proxy_runtime.runtime import SNAPSHOT_FILE, Ack, Nack

log = logging.getLogger("meshcd.envoy")

SOCKET_NAME = "xds.sock"


class EnvoyDataPlane:
    def __init__(self, state_dir: Path, *, proxy_id: str, service: str, binary: Path | None,
                 run_dir: Path | None = None, admin_port: int = 0, concurrency: int = 2,
                 ack_timeout: float = 15.0, log_level: str = "warning",
                 drain_seconds: float = 10.0,
                 now: Callable[[], float] = time.time) -> None:
        self.state_dir = state_dir
        self.run_dir = run_dir or state_dir / "envoy"
        self.socket_path = socket_path_for(self.run_dir, SOCKET_NAME)
        self.stats = Stats()
        self.stats.proxy_id, self.stats.service = proxy_id, service
        self.control = EnvoyControl(self.stats, now=now)
        self.ack_timeout = ack_timeout
        self.document: dict[str, Any] | None = None
        self.version: str | None = None
        self.supervisor = EnvoySupervisor(
            binary, self.run_dir, bootstrap(proxy_id=proxy_id, service=service,
                                            socket_path=str(self.socket_path),
                                            admin_port=admin_port),
            concurrency=concurrency, log_level=log_level, drain_seconds=drain_seconds)
        self._server: Any = None
        self._exporter: MetricsExporter | None = None

    async def start(self) -> Ack | Nack | None:
        """Load the last good snapshot, open the socket, start (or adopt) Envoy."""
        persisted = self._load_persisted()
        self._server = await start_server(self.control, self.socket_path)
        await self.supervisor.start()
        return persisted

    def _load_persisted(self) -> Ack | Nack | None:
        path = self.state_dir / SNAPSHOT_FILE
        if not path.exists():
            return None
        try:
            snap = loads_snapshot(path.read_bytes())
        except (SnapshotError, OSError, ValueError) as exc:
            return Nack(f"the persisted snapshot: {exc}")
        res = translate(snap)
        self.control.set_good(res)
        self._take_identity(snap)
        self.document, self.version = snapshot_to_json(snap), res.version
        return Ack(res.version)

    def _take_identity(self, snap: pc.Snapshot) -> None:
        ident = snap.identity
        if ident and ident.certificate_pem and ident.private_key_pem and ident.trust_bundle_pem:
            self.control.set_tls(TlsMaterial(ident.certificate_pem, ident.private_key_pem,
                                             ident.trust_bundle_pem))

    def set_identity(self, identity: dict[str, str]) -> None:
        self.control.set_tls(TlsMaterial(identity["certificatePem"], identity["privateKeyPem"],
                                         identity["trustBundlePem"]))

    async def apply(self, document: dict[str, Any]) -> Ack | Nack:
        try:
            snap = parse_snapshot({k: v for k, v in document.items() if k != "version"})
            compile_snapshot(snap)  # the builtin's checks too (regexes, clusters, ports)
        except (SnapshotError, ValueError) as exc:
            self.stats.nacks += 1
            self.control.last_nack = str(exc)
            return Nack(str(exc))
        self._take_identity(snap)
        res = translate(snap)
        outcome = await self.control.push(res, self.ack_timeout)
        if not isinstance(outcome, Acked):
            self.stats.nacks += 1
            return Nack(f"Envoy rejected it: {outcome.error}", res.version)
        bare = dataclasses.replace(snap, identity=None)
        try:
            dump_snapshot_file(bare, self.state_dir / SNAPSHOT_FILE)
        except OSError as exc:
            log.error("cannot keep the last good snapshot: %s", exc)
        self.document, self.version = dict(document), res.version
        self.stats.config_version = res.version
        self.stats.config_revision = snap.revision or ""
        self.stats.config_applied_at = time.time()
        return Ack(res.version)

    async def ready(self, timeout: float = 10.0) -> None:
        """Until Envoy serves the last good snapshot whole (at most `timeout` seconds: a proxy
        whose Envoy cannot come back still reaches its controller)."""
        if self.control.good is None:
            return
        try:
            await asyncio.wait_for(self.control.synced.wait(), timeout)
        except TimeoutError:
            log.warning("Envoy has not re-acked %s within %g s", (self.version or "")[:12],
                        timeout)

    def prometheus_text(self) -> bytes:
        """Prometheus mode: Envoy's own `/stats/prometheus` (as the stats_matcher keeps them)
        followed by the agent's `mesh_config_info` (version, revision, proxy_id, service) and
        `mesh_config_nacks`. Envoy's part is left out, not faked, when its admin is away."""
        envoy = b""
        port = self.supervisor.current_admin_port()
        if port is not None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/prometheus",
                                            timeout=2.0) as resp:
                    envoy = resp.read()
            except OSError as exc:
                log.warning("Envoy's /stats/prometheus: %s", exc)
        if self._exporter is None:
            self._exporter = MetricsExporter(self.stats)
        return envoy + self._exporter.render()

    def config_dump(self) -> dict[str, Any]:
        """What `/config_dump` shows (the builtin proxy's shape; the key redacted), plus
        Envoy's side: its pid, admin port, the versions it holds per type."""
        doc = None
        if self.document is not None:
            doc = json.loads(json.dumps(self.document))
            ident = doc.get("identity")
            if isinstance(ident, dict) and "privateKeyPem" in ident:
                ident["privateKeyPem"] = "[redacted]"
        applied = self.stats.config_applied_at
        return {
            "version": self.version,
            "revision": (doc or {}).get("revision"),
            "applied_at": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(applied))
                           if applied else None),
            "last_nack": self.control.last_nack,
            "snapshot": doc,
            "envoy": {"pid": self.supervisor.pid, "admin_port": self.supervisor.admin_port,
                      "connected": self.control.connected.is_set(),
                      "synced": self.control.synced.is_set()},
        }

    def running_document(self) -> dict[str, Any] | None:
        return self.document

    async def drain(self, seconds: float) -> bool:
        await self.supervisor.drain(seconds)
        if self._server is not None:
            await self._server.stop(0.5)
        return True

    async def abandon(self) -> None:
        """Stop serving xDS but leave Envoy running (tests: the agent dies, Envoy stays)."""
        if self._server is not None:
            await self._server.stop(0)
        if self.supervisor._task is not None:
            self.supervisor._task.cancel()
