"""The I/O shell of a guarded listener: one accept loop that never dies, caps, timeouts.

`GuardedListener.start(handler)` accepts on a listening socket and hands each admitted
connection to `handler(sock, peer)`. It

* refuses (closes at once) a connection over the listener's total or per-address cap;
* on EMFILE/ENFILE/ENOBUFS/ENOMEM logs one line, marks itself *not accepting* (health and
  metrics show it), waits with a doubling back-off and resumes when descriptors are free,
  logging once more then; any other accept error retries;
* with `header_timeout_s`, shuts down connections whose request head has not come in time
  (the HTTP app reports requests through `request_started`/`request_ended`, see
  `reconciler.net.http.TrackRequests`).

The decisions are `reconciler.net.limits`; this file only does what they say.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from reconciler.net.limits import AcceptBackoff, ConnectionTable, ListenerLimits

log = logging.getLogger("meshcd.net")

Peer = tuple[str, int]
Handler = Callable[[socket.socket, Peer], None]

SWEEP_S = 1.0
DEGRADED_AFTER_S = 0.0  # a listener out of descriptors is reported at once


def _peer(address: Any) -> Peer:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return str(address), 0


class GuardedListener:
    def __init__(self, name: str, sock: socket.socket, limits: ListenerLimits, *,
                 sweep_s: float = SWEEP_S) -> None:
        self.name = name
        self.sock = sock
        self.limits = limits
        self.sweep_s = sweep_s
        self.table: ConnectionTable[Peer] = ConnectionTable(limits)
        self.backoff = AcceptBackoff()
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.accept_errors: Counter[str] = Counter()
        self.timed_out = 0
        self._socks: dict[Peer, socket.socket] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._refusal_logged = -1e9
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, handler: Handler) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self._tasks.append(loop.create_task(self._accept_loop(handler)))
        self._tasks.append(loop.create_task(self._sweep_loop()))

    async def serve(self, handler: Handler, *, close: bool = False) -> None:
        """`start`, then run until cancelled; stops accepting on the way out (and closes the
        listening socket if `close`)."""
        self.start(handler)
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
            if close:
                self.sock.close()

    async def stop(self) -> None:
        """Stop accepting (the owner closes the listening socket and the connections)."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    # -- accepting --------------------------------------------------------------------------

    async def _accept_loop(self, handler: Handler) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                csock, addr = await loop.sock_accept(self.sock)
            except OSError as exc:
                if self.sock.fileno() == -1:
                    return  # the owner closed the listening socket
                await self._accept_failed(exc)
                continue
            down = self.backoff.succeeded(loop.time())
            if down is not None:
                log.warning("%s listener accepting again after %.1f s without descriptors",
                            self.name, down)
            self._admit(csock, _peer(addr), handler)

    async def _accept_failed(self, exc: OSError) -> None:
        was = self.backoff.accepting
        delay = self.backoff.failed(exc.errno, self._now())
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        self.accept_errors[name] += 1
        if was and not self.backoff.accepting:
            log.error("%s listener NOT ACCEPTING: %s (%d connections open here; %s); retrying "
                      "with back-off until descriptors are free", self.name, exc, len(self.table),
                      _fd_text())
        elif self.backoff.accepting and delay == 0:
            log.debug("%s listener: accept failed: %s", self.name, exc)
        if delay:
            await asyncio.sleep(delay)

    def _admit(self, csock: socket.socket, peer: Peer, handler: Handler) -> None:
        now = self._now()
        why = self.table.refusal(peer[0])
        if why is not None:
            self._sweep_closed()  # a connection that ended since the last sweep frees a place
            why = self.table.refusal(peer[0])
        if why is not None:
            self.refused[why] += 1
            with contextlib.suppress(OSError):
                csock.close()
            if now - self._refusal_logged > 10.0:
                self._refusal_logged = now
                log.warning("%s listener refusing connections (%s): %d open, busiest %s",
                            self.name, why, len(self.table), self.table.busiest(3))
            return
        self.accepted += 1
        csock.setblocking(False)
        self.table.opened(peer, peer[0], now)
        self._socks[peer] = csock
        try:
            handler(csock, peer)
        except Exception:
            log.exception("%s listener: handing over a connection from %s failed", self.name,
                          peer[0])
            self._forget(peer)
            with contextlib.suppress(OSError):
                csock.close()

    # -- accounting -------------------------------------------------------------------------

    def request_started(self, peer: Peer | None) -> None:
        if peer is not None:
            self.table.request_started(peer, self._now())

    def request_ended(self, peer: Peer | None) -> None:
        if peer is not None:
            self.table.request_ended(peer, self._now())

    def _forget(self, peer: Peer) -> None:
        self.table.closed(peer)
        self._socks.pop(peer, None)

    def _sweep_closed(self) -> None:
        for peer, s in list(self._socks.items()):
            if s.fileno() == -1:  # the transport closed it
                self._forget(peer)

    def sweep(self) -> None:
        """Forget closed connections; shut down those overdue for a request head."""
        self._sweep_closed()
        for peer in self.table.overdue(self._now()):
            s = self._socks.get(peer)
            self._forget(peer)
            if s is None:
                continue
            self.timed_out += 1
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # its transport sees the end and closes it

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                self.sweep()
            except Exception:  # keep sweeping; a bug here must not go unseen
                log.exception("%s listener: sweep failed", self.name)

    # -- health -----------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self.backoff.accepting

    def problem(self) -> str | None:
        if self.backoff.accepting:
            return None
        err = errno.errorcode.get(self.backoff.last_error or 0, "error")
        return f"{self.name} listener is not accepting connections ({err})"

    def status(self) -> dict[str, Any]:
        return {"accepting": self.backoff.accepting, "open": len(self.table),
                "accepted": self.accepted, "refused": dict(self.refused),
                "acceptErrors": dict(self.accept_errors), "timedOut": self.timed_out,
                "maxConnections": self.limits.max_connections,
                "maxPerAddress": self.limits.max_per_address}


def _fd_text() -> str:
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
        return f"{used} of {soft} descriptors in use"
    except (OSError, ImportError, ValueError):
        return "descriptors exhausted"


class ListenerCollector(Collector):
    """/metrics for a set of listeners (read at scrape time)."""

    def __init__(self, listeners: Callable[[], Iterable[GuardedListener]]) -> None:
        self.listeners = listeners

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        acc = GaugeMetricFamily("meshcd_listener_accepting",
                                "1 while the listener accepts connections, 0 while it cannot "
                                "(out of descriptors)", labels=["listener"])
        conns = GaugeMetricFamily("meshcd_listener_connections", "Open connections",
                                  labels=["listener"])
        refused = CounterMetricFamily("meshcd_listener_refused",
                                      "Connections closed at once: over a cap",
                                      labels=["listener", "reason"])
        errors = CounterMetricFamily("meshcd_listener_accept_errors", "accept() failures",
                                     labels=["listener", "error"])
        timed = CounterMetricFamily("meshcd_listener_header_timeouts",
                                    "Connections closed for a request head not sent in time",
                                    labels=["listener"])
        for lst in self.listeners():
            acc.add_metric([lst.name], 1 if lst.accepting else 0)
            conns.add_metric([lst.name], len(lst.table))
            for why in ("max_connections", "max_per_address"):
                refused.add_metric([lst.name, why], lst.refused[why])
            for name, n in sorted(lst.accept_errors.items()):
                errors.add_metric([lst.name, name], n)
            timed.add_metric([lst.name], lst.timed_out)
        yield acc
        yield conns
        yield refused
        yield errors
        yield timed


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one (a server wants all it may have);
    returns (soft, hard) after."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)
