"""The fleet agent: the proxy's side of the fleet stream (docs/fleet.md).

Dials out to the controller with the proxy's SVID, says hello with the config version it
serves, applies snapshots (with its own identity injected) and answers ACK/NACK, streams
the per-second stats window, renews its certificate at half-life over the same stream, and
reconnects with exponential backoff and full jitter. While the controller is away the proxy
keeps serving its last good config: nothing here ever unloads a config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from proxy_runtime.agent.checkpoints import CheckpointStore
from proxy_runtime.agent.core import (
    Apply,
    backoff_delay,
    judge_snapshot,
    new_windows,
    renew_delay,
    with_identity,
)
from proxy_runtime.agent.dataplane import DataPlane, running_document
from proxy_runtime.agent.errors import IdentityError
from proxy_runtime.agent.identity import (
    AgentState,
    Identity,
    StateDir,
    key_pem,
    make_csr,
    new_key,
)
from proxy_runtime.protocol.fleet import (
    MAX_TO_PROXY_BYTES,
    SUBPROTOCOL,
    Ack,
    Certificate,
    Checkpoint,
    Csr,
    Error,
    Hello,
    Nack,
    ProtocolError,
    Snapshot,
    Stats,
    decode_to_proxy,
    encode,
)
from proxy_runtime.runtime import Ack as Applied
from proxy_runtime.runtime import ProxyRuntime

log = logging.getLogger("meshcd.agent")

STABLE_SECONDS = 10.0  # a stream that lived this long resets the backoff


class FleetAgent:
    def __init__(
        self,
        runtime: ProxyRuntime | DataPlane,
        state_dir: StateDir,
        *,
        fleet_url: str,
        proxy_id: str,
        service: str,
        namespace: str,
        labels: dict[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        stats_interval: float = 1.0,
        ping_interval: float = 15.0,
        open_timeout: float = 10.0,
        dataplane_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.runtime = runtime
        self.dir = state_dir
        self.fleet_url = fleet_url
        self.proxy_id, self.service, self.namespace = proxy_id, service, namespace
        self.labels = dict(labels or {})
        self.clock = clock
        self.rng = rng or random.Random()
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.stats_interval = stats_interval
        self.ping_interval = ping_interval
        self.open_timeout = open_timeout
        # Awaited before each connection: the data plane serves the config the hello will
        # name (Envoy restarted and re-acked the last good snapshot).
        self.dataplane_ready = dataplane_ready
        self.state: AgentState = state_dir.load_state()
        self.identity: Identity = state_dir.load_identity()
        self.checkpoints = CheckpointStore(state_dir.path)
        self.connected = asyncio.Event()
        self.connects = 0
        self.last_error: str | None = None
        self.renewals = 0
        self._ws: ClientConnection | None = None
        self._stopping = False
        self._pending_key: bytes | None = None
        self._last_stats_second = -1

    @property
    def config_version(self) -> str | None:
        return self.state.config_version

    @property
    def epoch(self) -> int:
        return self.state.epoch

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Hold the stream until `stop()`: connect, serve, back off, again."""
        await self.refresh_identity()
        attempt = 0
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ProtocolError,
                    IdentityError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("fleet stream to %s: %s", self.fleet_url, self.last_error)
            except Exception as exc:  # never let one bad stream end the agent
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("fleet stream failed")
            finally:
                self._ws = None
                self.connected.clear()
            if self._stopping:
                break
            attempt = 0 if time.monotonic() - started >= STABLE_SECONDS else attempt + 1
            delay = backoff_delay(attempt, self.rng, base=self.backoff_base, cap=self.backoff_cap)
            log.info("reconnecting in %.2f s (attempt %d)", delay, attempt)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def reconnect(self) -> None:
        """End the current stream; the run loop says hello again (the controller sees the
        proxy DISCONNECTED, then SYNCED once it is back with its running version)."""
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def refresh_identity(self) -> None:
        """Re-apply the running config when it carries another certificate than the state
        dir's (a renewal finished while the proxy was down)."""
        doc = running_document(self.runtime)
        if doc is None:
            return
        current = doc.get("identity") or {}
        if current.get("certificatePem") == self.identity.chain_pem:
            return
        result = await self.runtime.apply(with_identity(doc, doc.get("revision"),
                                                        self.identity.snapshot_identity()))
        if not isinstance(result, Applied):
            log.error("cannot apply the renewed identity: %s", result.error)

    # -- one stream --------------------------------------------------------------------------

    async def _session(self) -> None:
        if self.dataplane_ready is not None:
            await self.dataplane_ready()
        ctx = self.dir.client_context()
        async with connect(self.fleet_url, ssl=ctx, subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                           max_size=MAX_TO_PROXY_BYTES, compression=None,
                           ping_interval=self.ping_interval, ping_timeout=self.ping_interval,
                           open_timeout=self.open_timeout, close_timeout=5.0) as ws:
            self._ws = ws
            await ws.send(encode(Hello(self.proxy_id, self.service, self.namespace, self.labels,
                                       self.state.config_version,
                                       checkpoint=self.checkpoints.newest(), anchoring=True)))
            self.connects += 1
            self.connected.set()
            log.info("connected to %s (running %s)", self.fleet_url,
                     (self.state.config_version or "nothing")[:12])
            helpers = [asyncio.create_task(self._stats_loop(ws)),
                       asyncio.create_task(self._renew_loop(ws))]
            try:
                async for frame in ws:
                    msg = decode_to_proxy(frame)
                    if isinstance(msg, Snapshot):
                        await self._on_snapshot(ws, msg)
                    elif isinstance(msg, Certificate):
                        await self._on_certificate(msg)
                    elif isinstance(msg, Checkpoint):
                        await self._on_checkpoint(msg)
                    elif isinstance(msg, Error):
                        self.last_error = f"controller: {msg.reason}"
                        log.error("controller says: %s", msg.reason)
            finally:
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)

    async def _on_snapshot(self, ws: ClientConnection, msg: Snapshot) -> None:
        decision = judge_snapshot(msg, self.state.epoch, self.identity.snapshot_identity())
        if not isinstance(decision, Apply):
            log.warning("snapshot %s refused: %s", msg.version[:12], decision.error)
            await ws.send(encode(Nack(msg.nonce, msg.version, decision.error)))
            return
        if decision.epoch > self.state.epoch:
            self.state.epoch = decision.epoch
            self._save_state()
        result = await self.runtime.apply(decision.document)
        if isinstance(result, Applied):
            self.state.config_version = msg.version
            self.state.revision = msg.revision
            self._save_state()
            await ws.send(encode(Ack(msg.nonce, msg.version)))
        else:
            await ws.send(encode(Nack(msg.nonce, msg.version, result.error)))

    async def _on_checkpoint(self, msg: Checkpoint) -> None:
        try:
            await asyncio.to_thread(self.checkpoints.add, msg)
        except OSError as exc:
            log.error("cannot save the audit checkpoint: %s", exc)

    async def _on_certificate(self, msg: Certificate) -> None:
        key, self._pending_key = self._pending_key, None
        if key is None:
            log.warning("unasked-for certificate from the controller ignored")
            return
        try:
            self.identity = await asyncio.to_thread(self.dir.save_identity, key, msg.chain_pem,
                                                    msg.trust_bundle_pem)
        except IdentityError as exc:
            log.error("renewed certificate refused: %s", exc)
            return
        self.renewals += 1
        log.info("certificate renewed; valid until %s", self.identity.not_after.isoformat())
        await self.refresh_identity()

    async def _stats_loop(self, ws: ClientConnection) -> None:
        window = self.runtime.stats.window
        self._last_stats_second = int(time.time()) - 2
        while True:
            await asyncio.sleep(self.stats_interval)
            fresh = new_windows(window.window(time.time(), 60), self._last_stats_second)
            if fresh:
                self._last_stats_second = fresh[-1]["second"]
                await ws.send(encode(Stats(fresh)))

    async def _renew_loop(self, ws: ClientConnection) -> None:
        while True:
            ident = self.identity
            delay = renew_delay(ident.not_before, ident.not_after, self.clock(), self.rng)
            await asyncio.sleep(delay)
            if self.identity is not ident:
                continue  # renewed meanwhile
            key = new_key()
            self._pending_key = key_pem(key)
            await ws.send(encode(Csr(make_csr(key, self.proxy_id))))
            # wait for the certificate; if none comes, try again in a minute
            for _ in range(60):
                await asyncio.sleep(1.0)
                if self.identity is not ident:
                    break
            else:
                log.warning("no certificate within 60 s of the renewal request")

    def _save_state(self) -> None:
        try:
            self.dir.save_state(self.state)
        except OSError as exc:
            log.error("cannot save the agent state: %s", exc)


def describe(agent: FleetAgent) -> dict[str, Any]:
    return {"fleetUrl": agent.fleet_url, "proxyId": agent.proxy_id,
            "connected": agent.connected.is_set(), "configVersion": agent.config_version,
            "epoch": agent.epoch, "connects": agent.connects, "lastError": agent.last_error,
            "spiffeId": agent.identity.spiffe_id,
            "certificateNotAfter": agent.identity.not_after.isoformat()}
