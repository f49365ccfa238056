"""The per-proxy ledger: what each proxy should run, what was sent, what it acked.

Pure and sans-I/O: `ProxyRecord` takes events (connect, desired, push started, ack, nack,
disconnect) and answers what to send next; the fleet server does the sockets. Time is passed in.

The push rule, per proxy: at most one snapshot in flight; the newest desired wins. While a
push is in flight a newer desired only replaces what comes next; the ACK of the in-flight
nonce records the version that was acked (never the newer one), then the newer one is sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


class ProxyState(enum.StrEnum):
    SYNCED = "SYNCED"
    STALE = "STALE"
    NACKED = "NACKED"
    DISCONNECTED = "DISCONNECTED"


@dataclass(frozen=True, slots=True)
class DesiredSnapshot:
    """A rendered snapshot for one or many proxies. `config_json` is the UTF-8 JSON of the
    snapshot without `identity`; `version` is its `compute_version`."""

    version: str
    revision: str
    config_json: bytes

    def __repr__(self) -> str:
        return f"DesiredSnapshot(version={self.version[:12]!r}, revision={self.revision!r}, {len(self.config_json)} bytes)"


@dataclass(frozen=True, slots=True)
class AckOutcome:
    status: Literal["acked", "nacked", "timeout"]
    error: str | None = None
    seconds: float | None = None  # push-to-ACK latency, when the ACK was seen, not read


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    proxy_id: str
    service: str
    namespace: str
    labels: dict[str, str]
    desired_version: str | None
    desired_revision: str | None
    sent_nonce: str | None
    acked_version: str | None
    last_error: str | None
    state: ProxyState
    connected_at: datetime | None
    last_seen: datetime | None

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat().replace("+00:00", "Z")

        return {
            "proxyId": self.proxy_id,
            "service": self.service,
            "namespace": self.namespace,
            "labels": dict(self.labels),
            "desiredVersion": self.desired_version,
            "desiredRevision": self.desired_revision,
            "sentNonce": self.sent_nonce,
            "ackedVersion": self.acked_version,
            "lastError": self.last_error,
            "state": str(self.state),
            "connectedAt": iso(self.connected_at),
            "lastSeen": iso(self.last_seen),
        }


@dataclass(frozen=True, slots=True)
class Push:
    """Command: send `desired` to the proxy under `nonce`."""

    nonce: str
    desired: DesiredSnapshot


@dataclass(frozen=True, slots=True)
class Answer:
    """What an ack/nack meant: whether it answered the push in flight, and for which version."""

    matched: bool
    version: str | None = None
    sent_at: float | None = None  # monotonic seconds when that push was started


@dataclass(slots=True)
class ProxyRecord:
    proxy_id: str
    service: str = ""
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    desired: DesiredSnapshot | None = None
    desired_version: str | None = None  # survives restarts (desired itself is not persisted)
    desired_revision: str | None = None
    sent_nonce: str | None = None
    sent_version: str | None = None
    sent_at: float | None = None
    in_flight: bool = False
    acked_version: str | None = None
    nacked_version: str | None = None  # refused on this connection: not sent again on it
    last_error: str | None = None
    connected: bool = False
    connected_at: datetime | None = None
    last_seen: datetime | None = None

    # -- events ------------------------------------------------------------------------------

    def connect(self, service: str, namespace: str, labels: dict[str, str],
                running_version: str | None, now: datetime) -> None:
        self.service, self.namespace, self.labels = service, namespace, dict(labels)
        self.acked_version = running_version  # what the proxy serves now, by its own word
        self.connected = True
        self.connected_at = now
        self.last_seen = now
        self.in_flight = False
        self.nacked_version = None
        self.sent_nonce = None
        self.sent_version = None

    def disconnect(self, now: datetime) -> None:
        self.connected = False
        self.in_flight = False
        self.last_seen = now

    def set_desired(self, desired: DesiredSnapshot | None) -> None:
        self.desired = desired
        self.desired_version = desired.version if desired else None
        self.desired_revision = desired.revision if desired else None

    def needs_push(self) -> bool:
        d = self.desired
        return (self.connected and not self.in_flight and d is not None
                and d.version != self.acked_version and d.version != self.nacked_version)

    def start_push(self, nonce: str, now_mono: float) -> Push | None:
        """The push to make now, if any (and mark it in flight)."""
        if not self.needs_push():
            return None
        assert self.desired is not None
        self.in_flight = True
        self.sent_nonce = nonce
        self.sent_version = self.desired.version
        self.sent_at = now_mono
        return Push(nonce, self.desired)

    def push_failed(self) -> None:
        """The frame could not be written (the stream is going away)."""
        self.in_flight = False

    def ack(self, nonce: str, version: str) -> Answer:
        if not self.in_flight or nonce != self.sent_nonce or version != self.sent_version:
            return Answer(False)
        self.in_flight = False
        self.acked_version = version
        self.nacked_version = None
        self.last_error = None
        return Answer(True, version, self.sent_at)

    def nack(self, nonce: str, error: str) -> Answer:
        if not self.in_flight or nonce != self.sent_nonce:
            return Answer(False)
        self.in_flight = False
        self.nacked_version = self.sent_version
        self.last_error = error
        return Answer(True, self.sent_version, self.sent_at)

    # -- views -------------------------------------------------------------------------------

    def outcome(self, version: str) -> AckOutcome | None:
        """Whether the proxy has answered `version`: acked (it runs it) or nacked (refused
        on this connection); None while it has not."""
        if self.acked_version == version:
            return AckOutcome("acked")
        if self.nacked_version == version:
            return AckOutcome("nacked", self.last_error)
        return None

    @property
    def state(self) -> ProxyState:
        if not self.connected:
            return ProxyState.DISCONNECTED
        if self.desired_version is None or self.desired_version == self.acked_version:
            return ProxyState.SYNCED
        if self.nacked_version is not None and self.nacked_version == self.desired_version:
            return ProxyState.NACKED
        return ProxyState.STALE

    def entry(self) -> LedgerEntry:
        return LedgerEntry(
            proxy_id=self.proxy_id, service=self.service, namespace=self.namespace,
            labels=dict(self.labels), desired_version=self.desired_version,
            desired_revision=self.desired_revision, sent_nonce=self.sent_nonce,
            acked_version=self.acked_version, last_error=self.last_error, state=self.state,
            connected_at=self.connected_at, last_seen=self.last_seen,
        )

    @classmethod
    def from_entry(cls, e: LedgerEntry) -> ProxyRecord:
        """A record restored from the store: disconnected, with its last known versions."""
        return cls(proxy_id=e.proxy_id, service=e.service, namespace=e.namespace,
                   labels=dict(e.labels), desired_version=e.desired_version,
                   desired_revision=e.desired_revision, sent_nonce=e.sent_nonce,
                   acked_version=e.acked_version, last_error=e.last_error,
                   connected_at=e.connected_at, last_seen=e.last_seen)


def count_states(records: Any) -> dict[str, int]:
    out = {str(s): 0 for s in ProxyState}
    for r in records:
        out[str(r.state)] += 1
    return out
