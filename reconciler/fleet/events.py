"""What the fleet tells its consumers: one typed event per fact, on one queue per consumer.

Pure data, no I/O. `FleetServer.subscribe(queue)` puts every event on the queue (the events
of all proxies, in the order the server saw them); the canary shell turns them into the
rollout engine's events (`reconciler.rollout.messages`), the controller answers `Connected`
and counts ACKs and NACKs. The Prometheus feed puts `Stats(source="prometheus")` on the
canary's queue, so the canary has one input for its evidence whatever the source.

An event says what happened; the fleet ledger (`ledger.ProxyRecord`) stays the one owner of
what each proxy acked. `AckTally` answers "did these proxies answer these versions" from the
ledger's word at the start and the events after it.

The stats window is typed here (`StatsWindow`): the wire (the agent's JSON window, the
format of `proxy_runtime/stats_window.py`) is parsed once, at the edge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy_runtime.protocol.fleet import Checkpoint
from reconciler.analysis.sample import CLASSES, LATENCY_BUCKETS, BadWindow
from reconciler.fleet.ledger import AckOutcome

StatsSource = Literal["fleet", "prometheus"]
_NBUCKETS = len(LATENCY_BUCKETS) + 1


@dataclass(frozen=True, slots=True)
class StatsWindow:
    """One proxy's one second of traffic: requests by status class (2xx, 3xx, 4xx, 5xx),
    connection failures, denials, the latency histogram (one count per bucket of
    `LATENCY_BUCKETS`, the last +Inf) and the latency sum."""

    second: int
    requests: tuple[int, int, int, int] = (0, 0, 0, 0)
    connection_failures: int = 0
    denials: int = 0
    latency_buckets: tuple[int, ...] = (0,) * _NBUCKETS
    latency_sum_seconds: float = 0.0

    @classmethod
    def from_wire(cls, doc: Mapping[str, Any]) -> StatsWindow:
        """Parse the agent's JSON window. Raises `BadWindow` (a ValueError) naming what is
        wrong."""
        try:
            second = doc["second"]
            req = doc["requests"]
            if not isinstance(req, Mapping):
                raise BadWindow("requests is not an object")
            requests = tuple(_count(req.get(c, 0), f"requests.{c}") for c in CLASSES)
            buckets = tuple(_count(v, "latency_buckets[]") for v in doc["latency_buckets"])
            conn = _count(doc.get("connection_failures", 0), "connection_failures")
            den = _count(doc.get("denials", 0), "denials")
            lsum = doc.get("latency_sum_seconds", 0.0)
        except KeyError as e:
            raise BadWindow(f"stats window without {e.args[0]!r}") from None
        except TypeError as e:
            raise BadWindow(f"stats window of the wrong shape: {e}") from None
        if not isinstance(second, int) or isinstance(second, bool):
            raise BadWindow("second is not an integer")
        if len(buckets) != _NBUCKETS:
            raise BadWindow(f"latency_buckets has {len(buckets)} entries, want {_NBUCKETS}")
        if (not isinstance(lsum, int | float) or isinstance(lsum, bool) or lsum < 0
                or not math.isfinite(lsum)):
            raise BadWindow("latency_sum_seconds is not a non-negative number")
        return cls(second, requests, conn, den, buckets, float(lsum))  # type: ignore[arg-type]

    def to_wire(self) -> dict[str, Any]:
        """The agent's JSON shape again (what the rollout engine and the charts read)."""
        return {
            "second": self.second,
            "requests": dict(zip(CLASSES, self.requests, strict=True)),
            "connection_failures": self.connection_failures,
            "denials": self.denials,
            "latency_buckets": list(self.latency_buckets),
            "latency_sum_seconds": self.latency_sum_seconds,
        }


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadWindow(f"{what} is not a count (a non-negative integer)")
    return value


# --- the events -----------------------------------------------------------------------------
# Each carries `at`: when the server saw it (seconds since the epoch, from its injected
# clock). A consumer that takes an event off its queue later still knows when it happened
# (the rollout's bake starts at the last ACK, not when the ACK was read).


@dataclass(frozen=True, slots=True)
class Connected:
    """A proxy's hello was accepted. `connection` numbers the stream and `assigned` is the
    server's `set_desired` count at the hello: `FleetServer.answer_hello` takes both back, so
    that an answer computed while a deploy named the proxy does not overwrite the deploy."""

    proxy_id: str
    service: str
    namespace: str
    labels: Mapping[str, str]
    running_version: str | None
    spiffe_id: str
    peer: str
    connection: int
    assigned: int
    at: float = field(kw_only=True)
    checkpoint: Checkpoint | None = field(default=None, kw_only=True)  # its newest audit anchor


@dataclass(frozen=True, slots=True)
class Acked:
    """The proxy applied `version` (the push in flight). `seconds`: push to ACK."""

    proxy_id: str
    version: str
    seconds: float | None = None
    at: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Nacked:
    """The proxy refused `version` and still runs what it ran."""

    proxy_id: str
    version: str
    error: str
    at: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Stats:
    """One per-second window of one proxy, from its stream or from Prometheus."""

    proxy_id: str
    window: StatsWindow
    source: StatsSource = "fleet"
    at: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Disconnected:
    proxy_id: str
    at: float = field(kw_only=True)


FleetEvent = Connected | Acked | Nacked | Stats | Disconnected


# --- waiting for answers, decided purely --------------------------------------------------


@dataclass(slots=True)
class AckTally:
    """Which of `expected` (proxy id -> version) acked or nacked their version. Start it with
    what the ledger already says (`seed`), then hand it every event (`handle`)."""

    expected: Mapping[str, str]
    results: dict[str, AckOutcome] = field(default_factory=dict)

    def seed(self, proxy_id: str, outcome: AckOutcome | None) -> None:
        if outcome is not None and proxy_id in self.expected:
            self.results.setdefault(proxy_id, outcome)

    def handle(self, event: FleetEvent) -> None:
        want = self.expected.get(event.proxy_id)
        if want is None:
            return
        if isinstance(event, Acked) and event.version == want:
            self.results[event.proxy_id] = AckOutcome("acked", None, event.seconds)
        elif isinstance(event, Nacked) and event.version == want:
            self.results[event.proxy_id] = AckOutcome("nacked", event.error)
        elif isinstance(event, Connected) and event.running_version == want:
            # it reconnected already running it (its ACK was lost with the old stream)
            self.results[event.proxy_id] = AckOutcome("acked")

    @property
    def done(self) -> bool:
        return len(self.results) >= len(self.expected)

    def outcomes(self) -> dict[str, AckOutcome]:
        """Every expected proxy's outcome; those without an answer timed out."""
        return {p: self.results.get(p, AckOutcome("timeout")) for p in sorted(self.expected)}
