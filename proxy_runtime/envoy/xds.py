"""One ADS stream with Envoy, as a sans-I/O state machine: requests in, pushes and outcomes
out. No sockets, no clocks, no protobuf: the server (server.py) converts.

State of the world, aggregated (one stream for CDS, EDS, LDS, RDS). A target version V is
pushed in the order xDS asks for (CDS, EDS, LDS, RDS) in two phases: clusters and their
endpoints, then, once both were ACKed, listeners and their routes. So a cluster exists (and
warmed with its endpoints) before a route names it, and a NACK of clusters stops the push
before any listener changes.

- ACK: a request of type T whose `response_nonce` is the nonce of our last push of T and that
  has no `error_detail`. NACK: the same with an `error_detail`. A request with an older nonce
  is stale and ignored (Envoy answers every response; only the newest counts).
- V is fully acked (`Acked(V)`) when every type V has was ACKed at V. EDS and RDS are only
  needed when V has resources of that type (Envoy subscribes to them by name).
- A NACK of any type of V is `Nacked(V, type, error_detail)`; the caller then retargets to the
  last good version, which re-pushes the types that had moved to V (Envoy still holds the old
  value of the rejected type), so Envoy ends on one whole version.
- A (re)connecting Envoy tells in `version_info` what it holds; a type it already holds at V
  is not pushed again (an agent restart changes nothing in Envoy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy_runtime.envoy.translate import CLA, CLUSTER, LISTENER, PUSH_ORDER, ROUTE_CONFIG

WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
# Clusters with their endpoints, then listeners with their routes. Envoy answers CDS only once
# the new clusters warmed (got their EDS), and LDS once the listeners got their RDS, so EDS
# goes out right after CDS and RDS right after LDS; listeners wait until the clusters and
# endpoints were ACKed, so a refused cluster stops the push before any listener changes.
# A third phase drops the clusters the version no longer has (make before break): only when
# the target has `interim` clusters; otherwise CDS already holds the version by then.
PHASES: tuple[tuple[str, str], ...] = ((CLUSTER, CLA), (LISTENER, ROUTE_CONFIG), (CLUSTER, CLA))
SHORT = {CLUSTER: "CDS", CLA: "EDS", LISTENER: "LDS", ROUTE_CONFIG: "RDS"}


INTERIM = "+before"  # label suffix of the make-before-break clusters of a version


@dataclass(frozen=True, slots=True)
class Target:
    """A version and its resources by type URL. `interim`: the clusters and endpoints to push
    first when the version drops clusters the running one has (the new ones plus the dropped
    ones), so a route still naming a dropped cluster finds it until the new routes are in;
    the dropped clusters go once listeners and routes were ACKed."""

    version: str
    resources: Mapping[str, Sequence[Mapping[str, Any]]]
    interim: Mapping[str, Sequence[Mapping[str, Any]]] | None = None

    def content(self, phase: int, type_url: str) -> tuple[str, Sequence[Mapping[str, Any]]]:
        """(version label, resources) of `type_url` in `phase`."""
        if phase == 0 and self.interim is not None:
            return self.version + INTERIM, self.interim.get(type_url, ())
        return self.version, self.resources.get(type_url, ())

    def labels(self) -> tuple[str, ...]:
        return (self.version, self.version + INTERIM) if self.interim else (self.version,)


@dataclass(frozen=True, slots=True)
class Request:
    type_url: str
    version_info: str = ""
    response_nonce: str = ""
    resource_names: tuple[str, ...] = ()
    error_detail: str | None = None


@dataclass(frozen=True, slots=True)
class Push:
    type_url: str
    version: str
    nonce: str
    resources: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Acked:
    version: str


@dataclass(frozen=True, slots=True)
class Nacked:
    version: str
    type_url: str
    error: str


Outcome = Acked | Nacked


@dataclass
class _TypeState:
    subscribed: bool = False
    names: tuple[str, ...] = ()
    nonce: str = ""  # of our last push of this type
    pushed: str | None = None  # version of that push
    holds: str | None = None  # the version Envoy holds (ACKed, or told on connecting)


@dataclass
class AdsStream:
    """The decisions for one ADS stream. Feed `retarget` and `on_request`; send what they
    return in order."""

    target: Target | None = None
    _types: dict[str, _TypeState] = field(default_factory=lambda: {t: _TypeState() for t in PUSH_ORDER})
    _counter: int = 0
    _phase: int = 0
    _done: bool = False
    _failed: bool = False

    def holds(self, type_url: str) -> str | None:
        return self._types[type_url].holds

    def retarget(self, target: Target) -> tuple[list[Push], list[Outcome]]:
        """Start pushing `target` (from its first type)."""
        self.target = target
        self._phase, self._done, self._failed = 0, False, False
        return self._advance()

    def on_request(self, req: Request) -> tuple[list[Push], list[Outcome]]:
        st = self._types.get(req.type_url)
        if st is None:
            return [], []  # a type we do not serve (Envoy asks for nothing else over ADS)
        first = not st.subscribed
        st.subscribed = True
        names_changed = req.resource_names != st.names
        st.names = req.resource_names
        outcomes: list[Outcome] = []
        pushes: list[Push] = []
        if not req.response_nonce:
            # A new subscription: Envoy says what it holds (empty on a fresh start).
            if first and req.version_info:
                st.holds = req.version_info
        elif req.response_nonce != st.nonce:
            return [], []  # stale: an answer to a push that a newer one replaced
        elif req.error_detail:
            assert st.pushed is not None
            if (self.target is not None and st.pushed in self.target.labels()
                    and not self._failed):
                self._failed = True
                outcomes.append(Nacked(self.target.version, req.type_url, req.error_detail))
            return pushes, outcomes
        else:
            st.holds = st.pushed
            if (names_changed and req.type_url not in WILDCARD_TYPES and self.target is not None
                    and st.pushed in self.target.labels()):
                # Envoy now watches other names: answer again so every watched name has data.
                phase = 0 if st.pushed != self.target.version else self._phase
                pushes.append(self._push(req.type_url, *self.target.content(phase, req.type_url)))
                return pushes, outcomes
        more, done = self._advance()
        return pushes + more, outcomes + done

    # -- internals -------------------------------------------------------------------------

    def _push(self, type_url: str, label: str, resources: Sequence[Mapping[str, Any]]) -> Push:
        self._counter += 1
        st = self._types[type_url]
        st.nonce, st.pushed = str(self._counter), label
        return Push(type_url, label, st.nonce, tuple(resources))

    def _advance(self) -> tuple[list[Push], list[Outcome]]:
        if self.target is None or self._done or self._failed:
            return [], []
        target = self.target
        pushes: list[Push] = []
        while self._phase < len(PHASES):
            primary, secondary = PHASES[self._phase]
            complete = True
            for t in (primary, secondary):
                st = self._types[t]
                label, resources = target.content(self._phase, t)
                if st.holds == label:
                    continue
                if t == secondary and not resources:
                    continue  # nothing of this type to send: nothing to wait for
                complete = False
                if not st.subscribed or st.pushed == label:
                    continue  # wait until Envoy asks for it / answers it
                if t == secondary and label not in (self._types[primary].pushed,
                                                    self._types[primary].holds):
                    continue  # EDS after CDS, RDS after LDS
                pushes.append(self._push(t, label, resources))
            if not complete:
                return pushes, []
            self._phase += 1
        self._done = True
        return pushes, [Acked(target.version)]
