"""The fleet listener: proxies hold an mTLS WebSocket stream; the controller pushes snapshots,
the proxies ACK/NACK, stream stats and renew their certificates over it. See docs/fleet.md.

I/O shell around the pure `ledger.ProxyRecord`: sockets, TLS, the push workers, the batched
ledger and audit writes. Decisions (what to push, what a state is) live in the ledger. What
happens (hello, ACK, NACK, stats, disconnect) is published as typed events (`events.py`) on
the queue of every subscriber; the server calls no one back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509

from proxy_runtime.protocol.fleet import (
    FLEET_PATH,
    Ack,
    Certificate,
    Checkpoint,
    Csr,
    Hello,
    Nack,
    ProtocolError,
    Stats,
    decode_to_controller,
    encode,
    encode_snapshot,
)
from reconciler.analysis.sample import BadWindow
from reconciler.audit import AuditLog
from reconciler.ca import (
    DEFAULT_SVID_TTL,
    CAError,
    CertificateAuthority,
    ServerCredentials,
    parse_spiffe_id,
)
from reconciler.fleet.audit_buffer import AuditBuffer
from reconciler.fleet.events import (
    Acked,
    AckTally,
    Connected,
    Disconnected,
    FleetEvent,
    Nacked,
    StatsWindow,
)
from reconciler.fleet.events import Stats as StatsEvent
from reconciler.fleet.ledger import (
    AckOutcome,
    DesiredSnapshot,
    LedgerEntry,
    ProxyRecord,
    count_states,
)
from reconciler.fleet.ledger_store import LedgerStore
from reconciler.fleet.memory import pin_mmap_threshold, trim
from reconciler.fleet.stream import FleetStream, Refused
from reconciler.fleet.tls import server_context
from reconciler.net.limits import FLEET_LIMITS, ListenerLimits
from reconciler.net.listener import GuardedListener

log = logging.getLogger("meshcd.fleet")

TLS_REFUSALS_AUDITED_PER_MINUTE = 20


class EventSink(Protocol):
    """Where a subscriber takes its events: an `asyncio.Queue` (of these events, or of more)."""

    def put_nowait(self, item: FleetEvent, /) -> None: ...


class FleetServer:
    listener: GuardedListener | None = None  # set by start()

    def __init__(
        self,
        ca: CertificateAuthority,
        audit: AuditLog | None,
        ledger_store: LedgerStore | None,
        *,
        epoch: int,
        clock: Callable[[], datetime],
        push_concurrency: int = 64,
        credentials: ServerCredentials | None = None,
        hostnames: tuple[str, ...] = ("localhost",),
        ips: tuple[str, ...] = ("127.0.0.1",),
        answers_hellos: bool = False,
        ping_interval: float = 15.0,
        ping_timeout: float = 15.0,
        hello_timeout: float = 10.0,
        svid_ttl: timedelta = DEFAULT_SVID_TTL,
        flush_interval: float = 1.0,
        seen_flush_interval: float = 30.0,
        tune_malloc: bool = True,
    ) -> None:
        if epoch < 0:
            raise ValueError("epoch must be a non-negative integer")
        if push_concurrency < 1:
            raise ValueError("push_concurrency must be at least 1")
        self.ca = ca
        self.epoch = epoch
        self.clock = clock
        self.push_concurrency = push_concurrency
        self.credentials = credentials or ca.issue_server_cert(hostnames, ips, now=clock())
        # True: a subscriber answers every `Connected` with `answer_hello` (the desired
        # snapshot of a proxy the ledger does not know yet); the proxy is pushed after that.
        self.answers_hellos = answers_hellos
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.hello_timeout = hello_timeout
        self.svid_ttl = svid_ttl
        self.flush_interval, self.seen_flush_interval = flush_interval, seen_flush_interval
        self.tune_malloc = tune_malloc
        self._trimmed = 0.0
        if tune_malloc:  # ~30 instead of ~50 KB per stream; see memory.pin_mmap_threshold
            pin_mmap_threshold()
        self._store = ledger_store
        self._audit = AuditBuffer(audit)
        self._records: dict[str, ProxyRecord] = {}
        if ledger_store is not None:
            for entry in ledger_store.load():
                self._records[entry.proxy_id] = ProxyRecord.from_entry(entry)
        self._conns: dict[str, FleetStream] = {}  # proxy id -> its stream (hello accepted)
        # set_desired calls are numbered; a hello's answer (computed while the loop runs on)
        # is dropped for a proxy that set_desired named after the hello came in.
        self._assign_seq = 0
        self._assigned_at: dict[str, int] = {}
        self._streams: set[FleetStream] = set()  # every open stream, hello or not
        self.checkpoint: Checkpoint | None = None  # the newest signed audit checkpoint
        self._anchoring: set[str] = set()  # proxies whose agents keep checkpoints
        self._dirty: set[str] = set()
        self._queue: asyncio.Queue[str] | None = None
        self._queued: set[str] = set()
        self._subscribers: list[tuple[EventSink, bool]] = []  # (queue, wants stats)
        self._connections = 0  # numbers accepted hellos (Connected.connection)
        self.bad_stats_windows = 0
        self._nonce = 0
        self._ssl = server_context(self.credentials, client_ca_pem=ca.trust_bundle_pem())
        self._running = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handshaking: set[socket.socket] = set()
        self._accepter: asyncio.Task[None] | None = None
        self._listen: socket.socket | None = None
        self._tls_refusals: list[float] = []
        self._stopping = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.tls_refusals_unaudited = 0
        self._host = "127.0.0.1"
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int, *, advertise: str | None = None,
                    limits: ListenerLimits = FLEET_LIMITS) -> None:
        """Listen on host:port (0: any free port; see `bound_port`). `advertise` is the host
        name put in `url` (default: `host`, or 127.0.0.1 for a wildcard address); `limits`:
        the listener's connection caps (reconciler.net)."""
        if self._running:
            raise RuntimeError("the fleet server is already started")
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        listen = socket.create_server((host, port), backlog=4096,
                                      family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        listen.setblocking(False)
        self._running = True
        self._listen = listen
        self._port = listen.getsockname()[1]
        self._host = advertise or ("127.0.0.1" if host in ("", "0.0.0.0", "::") else host)
        # We accept, and run each TLS handshake with connect_accepted_socket, so that a refused
        # one can be audited: asyncio and uvloop swallow handshake failures of their servers.
        self.listener = GuardedListener("fleet", listen, limits)
        self._accepter = loop.create_task(self._accept_loop(listen))
        self._spawn(self._pusher())
        self._stopping = asyncio.Event()
        self._flusher = loop.create_task(self._flush_loop())
        self._spawn(self._keepalive_loop())
        log.info("fleet listener on %s:%d (epoch %d)", host, self._port, self.epoch)

    async def _accept_loop(self, listen: socket.socket) -> None:
        """Accept until stopped (cancelled). Over a cap a connection is closed at once; out of
        descriptors the listener backs off and resumes, and says so (reconciler.net)."""
        assert self.listener is not None and self.listener.sock is listen
        with contextlib.suppress(asyncio.CancelledError):
            await self.listener.serve(
                lambda csock, addr: self._spawn(self._handshake(csock, _peer(addr))))

    async def _handshake(self, csock: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        self._handshaking.add(csock)
        try:
            await loop.connect_accepted_socket(lambda: FleetStream(self), csock, ssl=self._ssl,
                                               ssl_handshake_timeout=self.hello_timeout)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            with contextlib.suppress(OSError):
                csock.close()
            self._tls_refused(peer, exc)
        except Exception:  # a bug must not go unseen, nor leak the socket
            log.exception("fleet handshake with %s failed", peer)
            with contextlib.suppress(OSError):
                csock.close()
        finally:
            self._handshaking.discard(csock)

    async def stop(self) -> None:
        """Close every stream (each is audited as disconnected), then write the ledger."""
        if not self._running:
            return
        self._running = False
        if self._accepter is not None:
            self._accepter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepter
        if self._listen is not None:
            self._listen.close()
        for csock in list(self._handshaking):
            with contextlib.suppress(OSError):
                csock.close()
        for stream in list(self._streams):
            stream.close(1001, "controller going away")
        loop = asyncio.get_running_loop()
        end = loop.time() + 5.0
        while self._streams and loop.time() < end:
            await asyncio.sleep(0.02)
        for stream in list(self._streams):
            stream.abort()
        # let the flusher finish a write in progress rather than cancel it halfway
        self._stopping.set()
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
            self._flusher = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        now = self.clock()
        for rec in self._records.values():
            if rec.connected:
                rec.disconnect(now)
                self._dirty.add(rec.proxy_id)
        self._conns.clear()
        await self._flush(all_seen=True)

    @property
    def bound_port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"wss://{self._host}:{self._port}{FLEET_PATH}"

    # -- the API for the controller ----------------------------------------------------------

    def set_desired(self, assignments: Mapping[str, DesiredSnapshot]) -> None:
        """What each named proxy should run (connected or not). Latest wins; proxies that
        already acked that version are not touched."""
        self._assign_seq += 1
        for proxy_id, desired in assignments.items():
            if not isinstance(desired, DesiredSnapshot):
                raise TypeError(f"{proxy_id}: expected a DesiredSnapshot, got {type(desired).__name__}")
            self._assigned_at[proxy_id] = self._assign_seq
            rec = self._records.get(proxy_id)
            if rec is None:
                rec = self._records[proxy_id] = ProxyRecord(proxy_id)
            if rec.desired is desired or (rec.desired is not None and rec.desired == desired):
                continue
            rec.set_desired(desired)  # persisted with the next ack/nack/connect of the proxy
            self._enqueue(proxy_id)

    def clear_desired(self, proxy_ids: Iterable[str]) -> None:
        for proxy_id in proxy_ids:
            rec = self._records.get(proxy_id)
            if rec is not None:
                rec.set_desired(None)
                self._dirty.add(proxy_id)

    def forget(self, proxy_id: str) -> bool:
        """Drop a disconnected proxy from the ledger (False if unknown or connected)."""
        rec = self._records.get(proxy_id)
        if rec is None or rec.connected:
            return False
        del self._records[proxy_id]
        self._assigned_at.pop(proxy_id, None)
        self._dirty.discard(proxy_id)
        if self._store is not None:
            self._store.delete(proxy_id)
        return True

    def desired(self, proxy_id: str) -> DesiredSnapshot | None:
        """What the proxy should run now (what a rollout restores when it rolls back)."""
        rec = self._records.get(proxy_id)
        return rec.desired if rec is not None else None

    def ledger(self) -> list[LedgerEntry]:
        return [self._records[k].entry() for k in sorted(self._records)]

    def entry(self, proxy_id: str) -> LedgerEntry | None:
        rec = self._records.get(proxy_id)
        return rec.entry() if rec is not None else None

    def counts(self) -> dict[str, int]:
        return count_states(self._records.values())

    def connected(self) -> list[str]:
        return sorted(self._conns)

    def outcome(self, proxy_id: str, version: str) -> AckOutcome | None:
        """The ledger's word: has the proxy acked (or refused) `version`? None: not yet."""
        rec = self._records.get(proxy_id)
        return rec.outcome(version) if rec is not None else None

    # -- events ------------------------------------------------------------------------------

    def subscribe(self, queue: EventSink, *, stats: bool = True) -> None:
        """Put every fleet event on `queue` from now on (`stats=False`: all but `Stats`).
        Subscribing a queue again only changes `stats`."""
        self.unsubscribe(queue)
        self._subscribers.append((queue, stats))

    def unsubscribe(self, queue: EventSink) -> None:
        self._subscribers = [(q, s) for q, s in self._subscribers if q is not queue]

    def answer_hello(self, hello: Connected, desired: DesiredSnapshot | None) -> None:
        """The answer to a `Connected` (with `answers_hellos`): what the proxy should run,
        or None to keep what the ledger has. Dropped when the proxy's stream is not that
        hello's any more, and the snapshot is dropped when `set_desired` named the proxy
        since the hello (the newer word wins). Then the proxy is pushed what it needs."""
        stream = self._conns.get(hello.proxy_id)
        if stream is None or stream.serial != hello.connection:
            return
        if desired is not None and self._assigned_at.get(hello.proxy_id, 0) <= hello.assigned:
            self._records[hello.proxy_id].set_desired(desired)
        self._enqueue(hello.proxy_id)

    async def wait_for_acks(self, expected: Mapping[str, str],
                            timeout: float) -> dict[str, AckOutcome]:
        """Wait until every proxy of `expected` (proxy id -> version) acked or nacked its
        version, or `timeout` seconds, or the server stops: the ledger's word now, then the
        events (a subscription of its own, dropped on return)."""
        tally = AckTally(dict(expected))
        if not expected:
            return {}
        queue: asyncio.Queue[FleetEvent] = asyncio.Queue()
        self.subscribe(queue, stats=False)
        try:
            for proxy_id, version in expected.items():
                tally.seed(proxy_id, self.outcome(proxy_id, version))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not tally.done:
                try:
                    event = queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0 or not self._running:
                        break
                    getter = loop.create_task(queue.get())
                    stopping = loop.create_task(self._stopping.wait())
                    done, _ = await asyncio.wait((getter, stopping), timeout=left,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    if getter not in done:
                        getter.cancel()
                        break
                    event = getter.result()
                tally.handle(event)
        finally:
            self.unsubscribe(queue)
        return tally.outcomes()

    def _now(self) -> float:
        return self.clock().timestamp()

    def _publish(self, event: FleetEvent) -> None:
        for queue, _ in self._subscribers:
            queue.put_nowait(event)

    def send_checkpoint(self, checkpoint: Checkpoint) -> int:
        """Send a signed audit checkpoint to every connected proxy that keeps them (and to
        each that connects later). Returns how many it was sent to."""
        self.checkpoint = checkpoint
        frame = encode(checkpoint)
        return sum(1 for pid, stream in list(self._conns.items())
                   if pid in self._anchoring and stream.send_text(frame))

    # -- one stream (called by FleetStream, synchronously) ------------------------------------

    def stream_made(self, stream: FleetStream) -> None:
        self._streams.add(stream)  # tracked from the TLS handshake on, so stop() can close it

    def stream_opened(self, stream: FleetStream, path: str) -> None:
        """The WebSocket handshake is done: check the path and the client certificate."""
        if not self._running:
            raise self._refuse(stream.peer, None, "the controller is stopping")
        if path != FLEET_PATH:
            raise self._refuse(stream.peer, None, "wrong path (the fleet stream is at /fleet)")
        sslobj = stream.transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if not der:
            raise self._refuse(stream.peer, None, "no client certificate")
        try:
            stream.spiffe_id = self.ca.verify_svid([x509.load_der_x509_certificate(der)],
                                                   now=self.clock())
        except (CAError, ValueError) as exc:
            raise self._refuse(stream.peer, None, f"client certificate refused: {exc}") from None

    def stream_silent(self, stream: FleetStream) -> None:
        if stream.state == "open":
            stream.refuse(self._refuse(stream.peer, stream.spiffe_id,
                                       f"no hello within {self.hello_timeout:g} s").args[0])
        else:
            self._refuse(stream.peer, None, "no WebSocket handshake in time")
            stream.abort()

    def stream_lost(self, stream: FleetStream) -> None:
        self._streams.discard(stream)
        if stream.proxy_id is not None:
            self._disconnected(stream)

    def stream_message(self, stream: FleetStream, data: bytes) -> None:
        try:
            msg = decode_to_controller(data)
        except ProtocolError as exc:
            raise self._refuse(stream.peer, stream.spiffe_id, str(exc),
                               proxy_id=stream.proxy_id) from None
        if stream.proxy_id is None:
            if not isinstance(msg, Hello):
                raise self._refuse(stream.peer, stream.spiffe_id,
                                   f"the first message must be hello, not {msg.type}")
            self._hello(stream, msg)
            return
        rec = self._records[stream.proxy_id]
        rec.last_seen = self.clock()
        if isinstance(msg, Ack):
            answer = rec.ack(msg.nonce, msg.version)
            if answer.matched:
                now = asyncio.get_running_loop().time()
                seconds = now - answer.sent_at if answer.sent_at is not None else None
                self._dirty.add(stream.proxy_id)
                self._publish(Acked(stream.proxy_id, msg.version, seconds, at=self._now()))
                self._enqueue(stream.proxy_id)
        elif isinstance(msg, Nack):
            answer = rec.nack(msg.nonce, msg.error)
            if answer.matched:
                self._dirty.add(stream.proxy_id)
                self._publish(Nacked(stream.proxy_id, answer.version or msg.version, msg.error,
                                     at=self._now()))
                self._enqueue(stream.proxy_id)
        elif isinstance(msg, Stats):
            self._stats(stream, stream.proxy_id, msg.windows)
        elif isinstance(msg, Csr):
            self._renew(stream, msg)
        else:
            raise self._refuse(stream.peer, stream.spiffe_id,
                               f"unexpected {msg.type} after hello", proxy_id=stream.proxy_id)

    def _stats(self, stream: FleetStream, proxy_id: str, windows: list[dict[str, Any]]) -> None:
        wanted = [q for q, stats in self._subscribers if stats]
        if not wanted:
            return  # nobody reads stats: not even parsed
        at = self._now()
        for doc in windows:
            try:
                event = StatsEvent(proxy_id, StatsWindow.from_wire(doc), at=at)
            except BadWindow as exc:  # no evidence; said once per stream, counted always
                self.bad_stats_windows += 1
                if not stream.bad_stats:
                    stream.bad_stats = True
                    log.warning("proxy %s: stats window dropped (%s); further ones are "
                                "dropped silently", proxy_id, exc)
                continue
            for queue in wanted:
                queue.put_nowait(event)

    def _hello(self, stream: FleetStream, hello: Hello) -> None:
        spiffe = stream.spiffe_id
        assert spiffe is not None
        peer = stream.peer
        workload = parse_spiffe_id(spiffe).workload
        if workload != (hello.namespace, hello.service):
            raise self._refuse(peer, spiffe, f"identity mismatch: certificate {spiffe} may not "
                               f"speak for service {hello.service!r} in namespace {hello.namespace!r}",
                               proxy_id=hello.proxy_id)
        rec = self._records.get(hello.proxy_id)
        if rec is not None and rec.connected and (rec.namespace, rec.service) != workload:
            raise self._refuse(peer, spiffe, f"proxy id {hello.proxy_id!r} is connected as another "
                               "service", proxy_id=hello.proxy_id)
        old = self._conns.get(hello.proxy_id)
        if old is not None:  # the same proxy reconnected before we noticed the old stream die
            self._disconnected(old)
            old.refuse("replaced by a newer stream from the same proxy id")
        first_time = rec is None
        if rec is None:
            rec = self._records[hello.proxy_id] = ProxyRecord(hello.proxy_id)
        now = self.clock()
        rec.connect(hello.service, hello.namespace, hello.labels, hello.running_version, now)
        if first_time and self._store is not None:
            # Written now, not at the next flush: a controller that crashes in between would
            # not know the proxy after its restart (and a resumed rollout could not reach it).
            self._spawn(self._save_now(rec))
        stream.proxy_id = hello.proxy_id
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        self._conns[hello.proxy_id] = stream
        if hello.anchoring:
            self._anchoring.add(hello.proxy_id)
            if self.checkpoint is not None:
                stream.send_text(encode(self.checkpoint))
        else:
            self._anchoring.discard(hello.proxy_id)
        self._dirty.add(hello.proxy_id)
        self._audit.add(f"proxy:{hello.proxy_id}", "proxy.connected", hello.proxy_id,
                        {"spiffe_id": spiffe, "peer": peer, "running_version": hello.running_version,
                         "labels": hello.labels}, now)
        self._connections += 1
        stream.serial = self._connections
        self._publish(Connected(hello.proxy_id, hello.service, hello.namespace,
                                dict(hello.labels), hello.running_version, spiffe, peer,
                                stream.serial, self._assign_seq, at=now.timestamp(),
                                checkpoint=hello.checkpoint))
        if not self.answers_hellos:
            self._enqueue(hello.proxy_id)

    def _renew(self, stream: FleetStream, msg: Csr) -> None:
        assert stream.spiffe_id is not None and stream.proxy_id is not None
        now = self.clock()
        try:
            # the identity is the one this stream was verified with, never what the CSR asks
            chain = self.ca.issue_svid(msg.csr_pem, stream.spiffe_id, now=now, ttl=self.svid_ttl)
        except (CAError, ValueError) as exc:
            raise self._refuse(stream.peer, stream.spiffe_id, f"certificate renewal refused: {exc}",
                               proxy_id=stream.proxy_id) from None
        stream.send_text(encode(Certificate(chain.decode("ascii"),
                                            self.ca.trust_bundle_pem().decode("ascii"))))
        self._audit.add(f"proxy:{stream.proxy_id}", "certificate.renewed", stream.spiffe_id,
                        {"proxy_id": stream.proxy_id}, now)

    def _disconnected(self, stream: FleetStream) -> None:
        proxy_id = stream.proxy_id
        if proxy_id is None or self._conns.get(proxy_id) is not stream:
            return
        del self._conns[proxy_id]
        now = self.clock()
        rec = self._records.get(proxy_id)
        if rec is not None:
            rec.disconnect(now)
            self._dirty.add(proxy_id)
        self._audit.add(f"proxy:{proxy_id}", "proxy.disconnected", proxy_id,
                        {"spiffe_id": stream.spiffe_id}, now)
        self._publish(Disconnected(proxy_id, at=now.timestamp()))

    def _refuse(self, peer: str, spiffe: str | None, reason: str, *,
                proxy_id: str | None = None) -> Refused:
        log.warning("fleet stream from %s refused: %s", peer, reason)
        self._audit.add(f"proxy:{proxy_id}" if proxy_id else "fleet", "fleet.refused",
                        proxy_id or peer, {"peer": peer, "spiffe_id": spiffe, "reason": reason},
                        self.clock())
        return Refused(reason)

    def _tls_refused(self, peer: str, exc: BaseException) -> None:
        reason: str | None = None
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message  # e.g. "unable to get local issuer certificate"
        if not reason and isinstance(exc, ssl.SSLError):
            reason = exc.reason  # e.g. "PEER_DID_NOT_RETURN_A_CERTIFICATE"
        reason = reason or str(exc)
        log.info("fleet TLS handshake from %s refused: %r", peer, exc)
        now = time.monotonic()
        self._tls_refusals = [t for t in self._tls_refusals if now - t < 60.0]
        if len(self._tls_refusals) >= TLS_REFUSALS_AUDITED_PER_MINUTE:
            self.tls_refusals_unaudited += 1
            return
        self._tls_refusals.append(now)
        self._audit.add("fleet", "fleet.refused", peer,
                        {"peer": peer, "stage": "tls", "reason": str(reason)[:500],
                         "unaudited_before": self.tls_refusals_unaudited}, self.clock())

    async def _keepalive_loop(self) -> None:
        """Ping every stream each `ping_interval`; close those whose ping got no pong for
        `ping_timeout`. One task for the whole fleet, not one per stream."""
        interval = self.ping_interval
        rounds_to_wait = max(1, int(-(-max(self.ping_timeout, interval) // interval)))
        while True:
            await asyncio.sleep(interval)
            for stream in list(self._conns.values()):
                if stream.pong is not None:
                    stream.missed += 1
                    if stream.missed >= rounds_to_wait:
                        log.warning("proxy %s: no pong within %.0f s; closing", stream.proxy_id,
                                    self.ping_timeout)
                        stream.abort()
                    continue
                stream.ping()

    # -- pushing -----------------------------------------------------------------------------

    def _enqueue(self, proxy_id: str) -> None:
        rec = self._records.get(proxy_id)
        if (self._queue is None or rec is None or proxy_id in self._queued
                or proxy_id not in self._conns or not rec.needs_push()):
            return
        self._queued.add(proxy_id)
        self._queue.put_nowait(proxy_id)

    async def _pusher(self) -> None:
        """Send queued pushes. A send only writes a frame (flow control is one snapshot in
        flight per proxy), so one task does them all, yielding to the loop after every
        `push_concurrency` sends so that ACKs are read while a wave goes out."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        sent = 0
        while True:
            proxy_id = await self._queue.get()
            self._queued.discard(proxy_id)
            stream = self._conns.get(proxy_id)
            rec = self._records.get(proxy_id)
            if stream is None or rec is None:
                continue
            self._nonce += 1
            push = rec.start_push(f"{self.epoch}.{self._nonce}", loop.time())
            if push is None:
                continue
            d = push.desired
            try:
                ok = stream.send_text(encode_snapshot(push.nonce, self.epoch, d.version,
                                                      d.revision, d.config_json))
            except Exception:  # keep the pusher alive whatever one stream does
                log.exception("push to %s failed", proxy_id)
                ok = False
            if not ok:
                rec.push_failed()
            sent += 1
            if sent % self.push_concurrency == 0:
                await asyncio.sleep(0)

    # -- persistence ---------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        last_seen_flush = time.monotonic()
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_interval)
            all_seen = time.monotonic() - last_seen_flush >= self.seen_flush_interval
            if all_seen:
                last_seen_flush = time.monotonic()
            try:
                await self._flush(all_seen=all_seen)
            except Exception:
                log.exception("fleet ledger flush failed")

    async def _flush(self, *, all_seen: bool) -> None:
        if all_seen:
            self._dirty.update(self._conns)
        if self._store is None:
            self._dirty.clear()
        elif self._dirty:
            ids, self._dirty = list(self._dirty), set()
            for at in range(0, len(ids), 1000):  # bounded transactions (and transient memory)
                chunk = ids[at:at + 1000]
                entries = [self._records[i].entry() for i in chunk if i in self._records]
                try:
                    await asyncio.to_thread(self._store.save, entries)
                except Exception:
                    self._dirty.update(ids[at:])  # try again next time
                    raise
            # after a burst, give back what it freed (at most once a minute, off the loop)
            if len(ids) >= 1000 and self.tune_malloc and time.monotonic() - self._trimmed > 60:
                self._trimmed = time.monotonic()
                await asyncio.to_thread(trim)
        await self._audit.flush(self.clock())

    async def _save_now(self, rec: ProxyRecord) -> None:
        assert self._store is not None
        try:
            await asyncio.to_thread(self._store.save, [rec.entry()])
        except Exception:
            log.exception("saving the ledger row of %s failed (the next flush retries)",
                          rec.proxy_id)
            self._dirty.add(rec.proxy_id)

    # -- helpers ---------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
